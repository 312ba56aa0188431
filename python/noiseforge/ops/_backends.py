"""Availability checks shared by the ops' backend records."""

from __future__ import annotations

import contextlib
import functools
import os
from types import ModuleType

import torch

from noiseforge import _native

# the process facts live in the shared lower layer; the ops reach them through here
from noiseforge._common.runtime import DTYPE_CODES, cpu_threads, first_nonfinite  # noqa: F401


def native_reasons() -> list[str]:
    return [] if _native.native() is not None else [_native.native_error()]


def cuda_reasons() -> list[str]:
    why = _native.cuda_runtime_reason()
    if why:
        return [why]
    if not torch.cuda.is_available():
        return ["torch sees no CUDA device (a CPU build of torch, or no GPU)"]
    return []


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _import_triton() -> tuple[ModuleType | None, str]:
    try:
        import triton

        from noiseforge import kernels  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything
        return None, f"triton is not importable ({exc}); pip install 'noiseforge[triton]'"
    return triton, ""


def triton_reasons() -> list[str]:
    mod, why = _import_triton()
    return [] if mod is not None else [why]


def triton_version() -> str | None:
    mod, _ = _import_triton()
    return getattr(mod, "__version__", None) if mod is not None else None


def triton_device_reasons(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return [] if torch.cuda.is_available() else ["torch sees no CUDA device"]
    if device.type == "cpu":
        if triton_interpreting():
            return []
        return [
            "Triton runs CPU tensors only under its interpreter: set TRITON_INTERPRET=1 "
            "before triton is imported"
        ]
    return [f"Triton does not run on {device.type} tensors"]


def triton_launch_options() -> dict[str, bool]:
    # Compiled kernels must not contract a*b+c into FMAs (the numerical contract);
    # the interpreter has no such option and never fuses.
    return {} if triton_interpreting() else {"enable_fp_fusion": False}


def cdiv(a: int, b: int) -> int:
    """Blocks of size b covering a items (launch grids)."""
    return (a + b - 1) // b


def next_pow2(v: int) -> int:
    """Smallest power of two >= v (at least 1): Triton block sizes."""
    return 1 << max(0, int(v - 1).bit_length())


def device_guard(device: torch.device):
    """Make ``device`` current for a launch (kernels run on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def cuda_stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def on_device(kind: str):
    """``supports`` of a backend that runs on one device type; the inputs expose
    ``.device`` (or are a device)."""

    def supports(inputs) -> list[str]:
        device = getattr(inputs, "device", inputs)
        return [] if device.type == kind else [f"needs {kind} tensors, got {device.type} tensors"]

    return supports


def triton_supports(inputs) -> list[str]:
    return triton_device_reasons(getattr(inputs, "device", inputs))


def add_backends(
    op,
    *,
    cuda=None,
    triton=None,
    cpu=None,
    torch_ref=None,
    tolerance=None,
    gpu_tolerance=None,
    triton_check=None,
) -> None:
    """Add an op's backends to the :class:`~noiseforge.ops.registry.Op` ``op`` in the
    standard priority order (cuda, triton, cpu, torch); ``None`` leaves a backend
    out. ``tolerance`` is stated for CPU tensors, ``gpu_tolerance`` for CUDA tensors
    (the cuda backend, and Triton compiled for the GPU). ``triton_check`` adds
    per-plan reasons to the Triton device check."""
    from noiseforge.ops.registry import BackendRecord

    tol = tolerance or {}
    gpu = gpu_tolerance if gpu_tolerance is not None else tol

    def triton_reasons_for(plan) -> list[str]:
        why = triton_supports(plan)
        return why if why or triton_check is None else triton_check(plan)

    # the torch backend is the reference itself: exact on every device
    entries = [
        ("cuda", ("cuda",), cuda_reasons, on_device("cuda"), cuda, gpu),
        ("triton", ("cuda",), triton_reasons, triton_reasons_for, triton, gpu),
        ("cpu", ("cpu",), native_reasons, on_device("cpu"), cpu, None),
        ("torch", ("cpu", "cuda"), list, lambda plan: [], torch_ref, None),
    ]
    for priority, (name, auto, available, supports, run, on_gpu) in enumerate(entries):
        if run is not None:
            rec = BackendRecord(
                op.name, name, priority, auto, available, supports, run, tol, on_gpu
            )
            op.add(rec)
