"""Which backends a benchmark measures, taken from the op objects: every fast
backend (all but the torch reference, which is measured as a peer) on each device
where ``auto`` would pick it."""

from __future__ import annotations

import pytest
import torch

from noiseforge.ops import registry


def fast_backends(op: str) -> list:
    """``(backend, device)`` parameters for ``op``'s fast backends."""
    params = []
    for rec in registry.get_op(op).records():
        if rec.name == "torch":
            continue
        for device in rec.auto_devices:
            name = rec.name if rec.name == device else f"{rec.name}-{device}"
            params.append(pytest.param(rec.name, device, id=name))
    return params


def skip_unless_runs(op: str, backend: str, device: str) -> None:
    """Skip when ``backend`` cannot run ``op``'s example inputs on ``device``."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    the_op = registry.get_op(op)
    why = the_op.why_not(backend, the_op.example_inputs(torch.device(device)))
    if why:
        pytest.skip("; ".join(why))
