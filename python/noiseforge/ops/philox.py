"""Raw Philox4x32-10 words, exposed so that tests and users can check that every
backend draws the same random numbers."""

from __future__ import annotations

import torch

from noiseforge import _native
from noiseforge.ops import _backends as B
from noiseforge.ops import registry
from noiseforge.random import MAX_COUNTER, check_seed
from noiseforge.reference.philox import philox_words_reference

OP = "philox_words"


def _to_int64_words(raw: torch.Tensor) -> torch.Tensor:
    return raw.to(torch.int64) & 0xFFFFFFFF


def _run_torch(count: int, seed: int, offset: int, device: torch.device) -> torch.Tensor:
    return philox_words_reference(count, seed, offset, device)


def _run_cpu(count: int, seed: int, offset: int, device: torch.device) -> torch.Tensor:
    raw = torch.empty((count, 4), dtype=torch.int32)
    if count:
        _native.native().philox_words_cpu(raw.data_ptr(), count, seed, offset, B.cpu_threads())
    return _to_int64_words(raw)


def _run_cuda(count: int, seed: int, offset: int, device: torch.device) -> torch.Tensor:
    raw = torch.empty((count, 4), dtype=torch.int32, device=device)
    if count:
        with B.device_guard(device):
            _native.native().philox_words_cuda(
                raw.data_ptr(), count, seed, offset, B.cuda_stream(device)
            )
    return _to_int64_words(raw)


def _run_triton(count: int, seed: int, offset: int, device: torch.device) -> torch.Tensor:
    from noiseforge.kernels.ldp_noise import philox_words_kernel

    raw = torch.empty((count, 4), dtype=torch.int32, device=device)
    if count:
        block = 256
        with B.device_guard(device):
            philox_words_kernel[(B.cdiv(count, block),)](raw, count, seed, offset, BLOCK=block)
    return _to_int64_words(raw)


B.register_backends(OP, cuda=_run_cuda, triton=_run_triton, cpu=_run_cpu, torch_ref=_run_torch)


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
    check_seed(seed)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if offset < 0 or offset + count > MAX_COUNTER:
        raise ValueError(f"counters offset..offset+count must lie in [0, 2**63); offset={offset}")
    device = torch.device(device)
    rec = registry.select(OP, backend, device, device.type)
    return rec.run(count, seed, offset, device)
