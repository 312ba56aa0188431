"""The backend registry: one record per (op, backend).

Each record says where it runs and returns *reasons* when it cannot run an
input. ``backend="auto"`` takes the first record, by priority, whose reason list
is empty and that may be auto-selected on the input's device; an explicit
backend that cannot run raises :class:`BackendUnavailableError` listing why.
Every backend follows the same numerical contract, so ``auto`` never changes
results beyond the record's stated tolerance.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

BACKENDS: tuple[str, ...] = ("torch", "cpu", "cuda", "triton")
BACKEND_ENV = "NOISEFORGE_BACKEND"


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run this input; the message lists why."""


@dataclass(frozen=True)
class BackendRecord:
    """What one backend of one op supports.

    Attributes
    ----------
    op, name:
        The op ("ldp_noise") and backend ("torch", "cpu", "cuda", "triton").
    priority:
        Lower runs first under ``auto``.
    auto_devices:
        Device types on which ``auto`` may choose this backend (the Triton
        interpreter on CPU tensors is for tests, never an automatic choice).
    available:
        ``() -> list[str]``: reasons the backend cannot run at all (not built,
        package missing, no device).
    supports:
        ``(inputs) -> list[str]``: reasons it cannot run these inputs.
    run:
        The implementation.
    tolerance:
        ``{dtype: (atol, rtol)}`` of its float outputs against the torch
        reference on the same random words; integer outputs are always exact.
    deterministic:
        Whether repeated runs give identical bits.
    """

    op: str
    name: str
    priority: int
    auto_devices: tuple[str, ...]
    available: Callable[[], list[str]]
    supports: Callable[[Any], list[str]]
    run: Callable[..., Any]
    tolerance: Mapping[torch.dtype, tuple[float, float]] = field(default_factory=dict)
    deterministic: bool = True

    def reasons(self, inputs: Any) -> list[str]:
        why = list(self.available())
        return why if why else list(self.supports(inputs))


_REGISTRY: dict[str, dict[str, BackendRecord]] = {}


def register(record: BackendRecord) -> BackendRecord:
    if record.name not in BACKENDS:
        raise ValueError(f"unknown backend name {record.name!r}; expected one of {BACKENDS}")
    _REGISTRY.setdefault(record.op, {})[record.name] = record
    return record


def ops() -> list[str]:
    return sorted(_REGISTRY)


def records(op: str) -> list[BackendRecord]:
    """The records of ``op``, by priority."""
    if op not in _REGISTRY:
        raise KeyError(f"no op named {op!r} is registered; known ops: {ops()}")
    return sorted(_REGISTRY[op].values(), key=lambda r: r.priority)


def record(op: str, backend: str) -> BackendRecord:
    for rec in records(op):
        if rec.name == backend:
            return rec
    raise BackendUnavailableError(f"op {op!r} has no {backend!r} backend")


def requested_backend(backend: str | None) -> str:
    """Normalise ``backend``: None means ``$NOISEFORGE_BACKEND`` or ``auto``."""
    name = os.environ.get(BACKEND_ENV, "auto") if backend is None else backend
    name = name.strip().lower()
    if name != "auto" and name not in BACKENDS:
        source = f"${BACKEND_ENV}" if backend is None else "backend="
        raise ValueError(f"{source} is {name!r}; expected 'auto' or one of {', '.join(BACKENDS)}")
    return name


def why_not(op: str, backend: str, inputs: Any) -> list[str]:
    """Reasons ``backend`` cannot run ``op`` on ``inputs`` ([] when it can)."""
    return record(op, backend).reasons(inputs)


def select(op: str, backend: str | None, inputs: Any, device_type: str) -> BackendRecord:
    """The record that runs ``op`` on ``inputs`` (see the module docstring)."""
    name = requested_backend(backend)
    if name != "auto":
        rec = record(op, name)
        why = rec.reasons(inputs)
        if why:
            raise BackendUnavailableError(
                f"backend {name!r} cannot run {op} on this input: {'; '.join(why)}. "
                f"Use backend='auto' or one of: {', '.join(_usable(op, inputs)) or 'none'}."
            )
        return rec
    collected = []
    for rec in records(op):
        if device_type not in rec.auto_devices:
            collected.append(f"{rec.name}: not auto-selected for {device_type} tensors")
            continue
        why = rec.reasons(inputs)
        if not why:
            return rec
        collected.append(f"{rec.name}: {'; '.join(why)}")
    raise BackendUnavailableError(
        f"no backend can run {op} on this input:\n  " + "\n  ".join(collected)
    )


def _usable(op: str, inputs: Any) -> list[str]:
    return [rec.name for rec in records(op) if not rec.reasons(inputs)]
