"""Ops and their backends.

An :class:`Op` is an object: its name, its public plan type, the function that
validates a call into a plan, a small example plan for a device (what
``noiseforge info``, the tests and the benchmarks run), and one
:class:`BackendRecord` per backend, each with one typed ``run(plan)``.

Each record says where it runs and returns *reasons* when it cannot run a
plan. ``backend="auto"`` takes the first record, by priority, whose reason list
is empty and that may be auto-selected on the plan's device; an explicit
backend that cannot run raises :class:`BackendUnavailableError` listing why.
Every backend follows the same numerical contract -- it is deterministic
(repeated runs give identical bits; the op tests check it on every backend) and
matches the torch reference within the record's stated tolerance -- so ``auto``
never changes results beyond that tolerance.

The module-level functions (:func:`ops`, :func:`records`, :func:`record`,
:func:`select`, :func:`why_not`) look ops up by name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch

BACKENDS: tuple[str, ...] = ("torch", "cpu", "cuda", "triton")
BACKEND_ENV = "NOISEFORGE_BACKEND"

Tolerance = Mapping[torch.dtype, tuple[float, float]]


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run this input; the message lists why."""


class Plan(Protocol):
    """What every op's plan offers the registry: the device it runs on."""

    @property
    def device(self) -> torch.device: ...


P = TypeVar("P", bound=Plan)
R = TypeVar("R")


@dataclass(frozen=True)
class BackendRecord(Generic[P, R]):
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
        ``(plan) -> list[str]``: reasons it cannot run this plan.
    run:
        ``(plan) -> result``: the implementation.
    tolerance:
        ``{dtype: (atol, rtol)}`` of its float outputs against the torch
        reference on the same random words, on CPU tensors; integer outputs are
        always exact.
    gpu_tolerance:
        The same on CUDA tensors (GPU math libraries may round differently);
        ``None`` means the same as ``tolerance``.
    """

    op: str
    name: str
    priority: int
    auto_devices: tuple[str, ...]
    available: Callable[[], list[str]]
    supports: Callable[[P], list[str]]
    run: Callable[[P], R]
    tolerance: Tolerance = field(default_factory=dict)
    gpu_tolerance: Tolerance | None = None

    def reasons(self, plan: P) -> list[str]:
        """Why this backend cannot run ``plan`` ([] when it can)."""
        why = list(self.available())
        return why if why else list(self.supports(plan))

    def tolerance_for(self, device: torch.device | str) -> Tolerance:
        """The stated tolerance on ``device``'s type."""
        kind = torch.device(device).type
        if kind == "cuda" and self.gpu_tolerance is not None:
            return self.gpu_tolerance
        return self.tolerance


class Op(Generic[P, R]):
    """One op: how to plan it, an example input, and its backends.

    Parameters
    ----------
    name:
        The registry name ("knn_topk").
    plan_type:
        The public plan class ``plan`` returns and every backend's ``run`` takes.
    plan:
        Validates a call's arguments and returns a ``plan_type``.
    example_inputs:
        ``(device) -> plan``: a small representative plan on ``device`` (used by
        ``noiseforge info`` to say which backend can run where, and by the tests).
    summary:
        One line for tables and docs.
    """

    def __init__(
        self,
        name: str,
        plan_type: type[P],
        plan: Callable[..., P],
        example_inputs: Callable[[torch.device], P],
        summary: str = "",
    ) -> None:
        self.name = name
        self.plan_type = plan_type
        self.plan = plan
        self.example_inputs = example_inputs
        self.summary = summary
        self._records: dict[str, BackendRecord[P, R]] = {}

    def __repr__(self) -> str:
        return f"Op({self.name!r}, backends={self.backends})"

    def add(self, record: BackendRecord[P, R]) -> BackendRecord[P, R]:
        """Register ``record`` (replacing a record of the same backend name)."""
        if record.name not in BACKENDS:
            raise ValueError(f"unknown backend name {record.name!r}; expected one of {BACKENDS}")
        if record.op != self.name:
            raise ValueError(f"record of op {record.op!r} added to op {self.name!r}")
        self._records[record.name] = record
        return record

    def remove(self, backend: str) -> BackendRecord[P, R] | None:
        """Unregister ``backend`` (tests use it); returns the record it removed."""
        return self._records.pop(backend, None)

    @property
    def backends(self) -> tuple[str, ...]:
        """Backend names, by priority."""
        return tuple(rec.name for rec in self.records())

    def records(self) -> list[BackendRecord[P, R]]:
        """The records, by priority."""
        return sorted(self._records.values(), key=lambda r: r.priority)

    def record(self, backend: str) -> BackendRecord[P, R]:
        """The record of ``backend``."""
        rec = self._records.get(backend)
        if rec is None:
            raise BackendUnavailableError(f"op {self.name!r} has no {backend!r} backend")
        return rec

    def why_not(self, backend: str, plan: P) -> list[str]:
        """Reasons ``backend`` cannot run ``plan`` ([] when it can)."""
        return self.record(backend).reasons(plan)

    def usable(self, plan: P) -> list[str]:
        """Names of the backends that can run ``plan``, by priority."""
        return [rec.name for rec in self.records() if not rec.reasons(plan)]

    def select(self, backend: str | None, plan: P) -> BackendRecord[P, R]:
        """The record that runs ``plan`` (see the module docstring)."""
        name = requested_backend(backend)
        if name != "auto":
            rec = self.record(name)
            why = rec.reasons(plan)
            if why:
                raise BackendUnavailableError(
                    f"backend {name!r} cannot run {self.name} on this input: {'; '.join(why)}. "
                    f"Use backend='auto' or one of: {', '.join(self.usable(plan)) or 'none'}."
                )
            return rec
        device_type = plan.device.type
        collected = []
        for rec in self.records():
            if device_type not in rec.auto_devices:
                collected.append(f"{rec.name}: not auto-selected for {device_type} tensors")
                continue
            why = rec.reasons(plan)
            if not why:
                return rec
            collected.append(f"{rec.name}: {'; '.join(why)}")
        raise BackendUnavailableError(
            f"no backend can run {self.name} on this input:\n  " + "\n  ".join(collected)
        )

    def run(self, plan: P, backend: str | None = None) -> R:
        """Run ``plan`` on the selected backend."""
        return self.select(backend, plan).run(plan)


_OPS: dict[str, Op[Any, Any]] = {}


def register_op(op: Op[P, R]) -> Op[P, R]:
    """Add ``op`` to the registry (an op of the same name is replaced)."""
    _OPS[op.name] = op
    return op


def get_op(name: str) -> Op[Any, Any]:
    """The op called ``name``."""
    if name not in _OPS:
        raise KeyError(f"no op named {name!r} is registered; known ops: {ops()}")
    return _OPS[name]


def all_ops() -> list[Op[Any, Any]]:
    """Every registered op, by name."""
    return [_OPS[name] for name in ops()]


def ops() -> list[str]:
    """Names of the registered ops."""
    return sorted(_OPS)


def records(op: str) -> list[BackendRecord]:
    """The records of ``op``, by priority."""
    return get_op(op).records()


def record(op: str, backend: str) -> BackendRecord:
    return get_op(op).record(backend)


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
    return get_op(op).why_not(backend, inputs)


def select(op: str, backend: str | None, inputs: Any, device_type: str | None = None):
    """The record that runs ``op`` on the plan ``inputs``.

    ``device_type`` is accepted for older callers and must match the plan's."""
    the_op = get_op(op)
    if isinstance(inputs, torch.device):  # philox_words was once selected by its device
        inputs = the_op.example_inputs(inputs)
    if device_type is not None and device_type != inputs.device.type:
        raise ValueError(f"device_type {device_type!r} is not the plan's ({inputs.device.type})")
    return the_op.select(backend, inputs)


def register(record: BackendRecord) -> BackendRecord:
    """Add ``record`` to its op.

    .. deprecated:: use ``get_op(record.op).add(record)``."""
    warnings.warn(
        "registry.register(record) is deprecated: use registry.get_op(record.op).add(record)",
        DeprecationWarning,
        stacklevel=2,
    )
    return get_op(record.op).add(record)
