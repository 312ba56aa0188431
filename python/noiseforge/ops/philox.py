"""Raw Philox4x32-10 words, exposed so that tests and users can check that every
backend draws the same random numbers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noiseforge import _native
from noiseforge._common.validation import check_int
from noiseforge.ops import _backends as B
from noiseforge.ops import registry
from noiseforge.random import MAX_COUNTER, check_seed
from noiseforge.reference.philox import philox_words_reference

OP = "philox_words"


@dataclass(frozen=True)
class PhiloxPlan:
    """A validated :func:`philox_words` call: ``count`` counters from ``offset``."""

    count: int
    seed: int
    offset: int
    device: torch.device


def plan_philox_words(
    count: int, *, seed: int, offset: int = 0, device: torch.device | str = "cpu"
) -> PhiloxPlan:
    """Validate a :func:`philox_words` call (see there)."""
    check_seed(seed)
    check_int("count", count, 0, MAX_COUNTER)
    check_int("offset", offset, 0, MAX_COUNTER)
    if offset + count > MAX_COUNTER:
        raise ValueError(f"counters offset..offset+count must lie in [0, 2**63); offset={offset}")
    return PhiloxPlan(int(count), int(seed), int(offset), torch.device(device))


def _to_int64_words(raw: torch.Tensor) -> torch.Tensor:
    return raw.to(torch.int64) & 0xFFFFFFFF


def _run_torch(p: PhiloxPlan) -> torch.Tensor:
    return philox_words_reference(p.count, p.seed, p.offset, p.device)


def _run_cpu(p: PhiloxPlan) -> torch.Tensor:
    count, seed, offset = p.count, p.seed, p.offset
    raw = torch.empty((count, 4), dtype=torch.int32)
    if count:
        _native.native().philox_words_cpu(raw.data_ptr(), count, seed, offset, B.cpu_threads())
    return _to_int64_words(raw)


def _run_cuda(p: PhiloxPlan) -> torch.Tensor:
    count, seed, offset, device = p.count, p.seed, p.offset, p.device
    raw = torch.empty((count, 4), dtype=torch.int32, device=device)
    if count:
        with B.device_guard(device):
            _native.native().philox_words_cuda(
                raw.data_ptr(), count, seed, offset, B.cuda_stream(device)
            )
    return _to_int64_words(raw)


def _run_triton(p: PhiloxPlan) -> torch.Tensor:
    count, seed, offset, device = p.count, p.seed, p.offset, p.device
    from noiseforge.kernels.philox import philox_words_kernel

    raw = torch.empty((count, 4), dtype=torch.int32, device=device)
    if count:
        block = 256
        with B.device_guard(device):
            philox_words_kernel[(B.cdiv(count, block),)](raw, count, seed, offset, BLOCK=block)
    return _to_int64_words(raw)


PHILOX_WORDS: registry.Op[PhiloxPlan, torch.Tensor] = registry.register_op(
    registry.Op(
        OP,
        PhiloxPlan,
        plan_philox_words,
        lambda device: plan_philox_words(5, seed=1, offset=3, device=device),
        "raw Philox4x32-10 words of consecutive counters",
    )
)
B.add_backends(PHILOX_WORDS, cuda=_run_cuda, triton=_run_triton, cpu=_run_cpu, torch_ref=_run_torch)


def philox_words(
    count: int,
    *,
    seed: int,
    offset: int = 0,
    device: torch.device | str = "cpu",
    backend: str | None = None,
) -> torch.Tensor:
    """The Philox4x32-10 words of ``count`` consecutive counters.

    ``out[i, j]`` is word ``c_j`` of ``Philox4x32-10(key=(seed mod 2^32, seed >> 32),
    counter=(c mod 2^32, c >> 32, 0, 0))`` with ``c = offset + i``, the convention of
    Triton's ``tl.randint4x``.

    Returns
    -------
    torch.Tensor
        (count, 4) int64 holding values in [0, 2^32), on ``device``.

    Raises
    ------
    ValueError
        ``count < 0``, ``seed`` or ``offset`` outside [0, 2^63), or counters past 2^63.
    BackendUnavailableError
        The backend cannot run on ``device`` (the message says why).
    """
    p = plan_philox_words(count, seed=seed, offset=offset, device=device)
    return PHILOX_WORDS.run(p, backend)
