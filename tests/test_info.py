"""`noiseforge info` and the console script."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from noiseforge import _native
from noiseforge.cli import main
from noiseforge.ops import BackendUnavailableError, ldp_noise


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


def test_a_cuda_build_without_a_device_says_so(capsys):
    # The CUDA wheel on a machine without a GPU (.ci/run sets NOISEFORGE_EXPECT_CUDA_BUILD=1
    # for it): it imports, `info` names the build and why the cuda backend cannot run, the
    # CPU backends work, and asking for cuda gives that reason instead of a crash.
    if not _native.cuda_built():
        why = _native.native_error() or "built with NOISEFORGE_CUDA=OFF or without nvcc"
        if os.environ.get("NOISEFORGE_EXPECT_CUDA_BUILD", "0") == "1":
            pytest.fail(f"NOISEFORGE_EXPECT_CUDA_BUILD=1 but this build has no CUDA backend: {why}")
        pytest.skip(f"this build has no CUDA backend ({why})")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the CUDA backend's own tests cover this build")
    reason = _native.cuda_runtime_reason()
    assert reason.startswith("the CUDA runtime reports no usable device") or (
        reason == "no CUDA device is visible"
    ), reason
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "CUDA: on (runtime " in out
    assert f"ldp_noise         cuda     cpu     unavailable: {reason}" in out
    x = torch.rand(5, 3)
    y = ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, seed=3, backend="cpu")
    assert y.shape == (5, 1, 3) and bool(((y >= 0) & (y <= 1)).all())
    with pytest.raises(BackendUnavailableError, match=r"no usable device|no CUDA device"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, seed=3, backend="cuda")
