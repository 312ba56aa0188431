"""Backend and device helpers for the op tests: which (backend, device) pairs to run, and
how a backend that cannot run is skipped (or fails under NOISEFORGE_STRICT=1)."""

from __future__ import annotations

import os

import pytest
import torch

from noiseforge.ops import registry

STRICT = os.environ.get("NOISEFORGE_STRICT", "0") == "1"

# ids of (backend, device) pairs: the Triton interpreter runs CPU tensors
_IDS = {
    ("torch", "cpu"): "torch-cpu",
    ("cpu", "cpu"): "cpu",
    ("triton", "cpu"): "triton-interpreter",
    ("torch", "cuda"): "torch-cuda",
    ("cuda", "cuda"): "cuda",
    ("triton", "cuda"): "triton-cuda",
}
_DEVICES = {"torch": ("cpu", "cuda"), "cpu": ("cpu",), "cuda": ("cuda",), "triton": ("cpu", "cuda")}


def backend_devices(op: str) -> list:
    """The (backend, device) pairs ``op`` is tested on, from its Op object: each of its
    backends on every device it runs (Triton on CPU tensors through the interpreter);
    the torch reference runs on the same device. CUDA pairs are marked ``gpu``."""
    params = []
    for name in registry.get_op(op).backends:
        for device in _DEVICES[name]:
            marks = [pytest.mark.gpu] if device == "cuda" else []
            params.append(pytest.param(name, device, id=_IDS[(name, device)], marks=marks))
    return params


# every backend name on every device: for tests that loop over all ops
BACKEND_DEVICES = [
    pytest.param(
        name, device, id=_IDS[(name, device)], marks=[pytest.mark.gpu] if device == "cuda" else []
    )
    for name, device in _IDS
]


def require_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        skip_or_fail("torch sees no CUDA device")


def require_backend(op: str, backend: str, inputs) -> registry.BackendRecord:
    """The record of ``backend``; skips with the registry's reasons when it cannot
    run ``inputs`` (fails instead under NOISEFORGE_STRICT=1)."""
    why = registry.why_not(op, backend, inputs)
    if why:
        skip_or_fail(f"{op}/{backend}: " + "; ".join(why))
    return registry.record(op, backend)


def skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(f"NOISEFORGE_STRICT=1 and an expected backend cannot run: {reason}")
    pytest.skip(reason)


def assert_close_report(
    actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float
) -> None:
    """Equality within (atol, rtol), reporting the worst mismatches (NaN/inf included)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if atol == 0 and rtol == 0:
        a, e = actual.cpu(), expected.cpu()
        same = (
            (a == e) | (torch.isnan(a.float()) & torch.isnan(e.float()))
            if a.is_floating_point()
            else a == e
        )
        bad = (~same).nonzero()
        assert bad.numel() == 0, (
            f"{bad.shape[0]} of {a.numel()} elements differ; first at {bad[0].tolist()}: "
            f"{a[tuple(bad[0])].item()} vs {e[tuple(bad[0])].item()}"
        )
        return
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)
