"""`noiseforge info` and the console script."""

from __future__ import annotations

import subprocess
import sys

from noiseforge.cli import main


def test_info_prints_build_and_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "native module: built with" in out and "OpenMP" in out and "CUDA:" in out
    assert "triton:" in out
    assert "ldp_noise" in out and "philox_words" in out and "usable (auto)" in out


def test_console_script_runs_as_module():
    done = subprocess.run(
        [sys.executable, "-m", "noiseforge", "info"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "backend" in done.stdout
