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


def test_the_command_line_works_without_the_optional_extras():
    # A plain `pip install noiseforge` has neither the serve extra (starlette, uvicorn, h11)
    # nor Ray: building the parser and `noiseforge info` must not need them.
    code = (
        "import sys\n"
        "for name in ('starlette', 'uvicorn', 'h11', 'ray', 'pyarrow', 'transformers'):\n"
        "    sys.modules[name] = None\n"
        "from noiseforge.cli import main\n"
        "sys.exit(main(['info']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ldp_noise" in done.stdout
