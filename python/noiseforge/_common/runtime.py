"""Facts about the running process that native kernels depend on: how many threads they
may use (none beyond one in a forked child) and a fast NaN/inf scan."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from noiseforge import _native

_forked_child = False
_fork_hooks: list[Callable[[], None]] = []


def _after_fork_in_child() -> None:
    global _forked_child
    _forked_child = True
    for hook in list(_fork_hooks):
        hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def forked_child() -> bool:
    """Whether this process was forked from one that may have started an OpenMP pool."""
    return _forked_child


def on_fork_in_child(hook: Callable[[], None]) -> None:
    """Run ``hook()`` in a forked child (after the runtime has marked itself forked)."""
    _fork_hooks.append(hook)


def cpu_threads() -> int:
    """Threads for the native CPU kernels: torch's setting, or 1 in a process
    forked from one that may have started an OpenMP pool (GNU OpenMP's pool does
    not survive fork, and using it there would hang)."""
    return 1 if _forked_child else torch.get_num_threads()


# dtype codes of the native kernels' element types (csrc/cpu/dispatch.cpp)
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.uint8: 3}


def first_nonfinite(x: torch.Tensor) -> int:
    """Flat index of the first NaN/inf of x, or -1 (natively for contiguous CPU tensors:
    one pass, no temporaries; torch's isfinite on a large matrix costs tens of ms)."""
    if not x.is_floating_point() or x.numel() == 0:
        return -1
    mod = _native.native()
    if mod is not None and x.device.type == "cpu" and x.is_contiguous() and x.dtype in DTYPE_CODES:
        return int(
            mod.first_nonfinite_cpu(x.data_ptr(), x.numel(), DTYPE_CODES[x.dtype], cpu_threads())
        )
    bad = ~torch.isfinite(x.reshape(-1))
    return int(torch.nonzero(bad)[0]) if bool(bad.any()) else -1
