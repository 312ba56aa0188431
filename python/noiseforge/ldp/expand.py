"""Layer 2 of LDPKiT: expanding released data into a larger query set.

Everything here is post-processing of a :class:`NoisedBatch` -- it reads only
already-released rows, checked against their seal first -- so it costs no
privacy budget and never touches the ledger ("noise^2": more noise on noised
inputs, and superimposed pairs). The results are sealed NoisedBatches of the
same release.
"""

from __future__ import annotations

from typing import Any

import torch

from noiseforge.ldp.release import NoisedBatch, _derive
from noiseforge.ops import ldp_noise
from noiseforge.ops.noise_spec import (
    _DEFAULT_CLAMP,
    _DEFAULT_MECHANISM,
    _DEFAULT_UNIT,
    Mechanism,
    NoiseSpec,
    resolve_noise,
)


def add_noise_copies(
    batch: NoisedBatch,
    copies: int,
    noise: NoiseSpec | None = None,
    *,
    epsilon: float | None = None,
    lower: Any = None,
    upper: Any = None,
    mechanism: str | Mechanism = _DEFAULT_MECHANISM,
    delta: float | None = None,
    unit: str = _DEFAULT_UNIT,
    levels: int | None = None,
    clamp: bool = _DEFAULT_CLAMP,
    seed: int | None = None,
    backend: str | None = None,
) -> NoisedBatch:
    """K extra noisy copies of every released row, with the noise of ``noise``.

    ``noise`` is a :class:`noiseforge.ops.NoiseSpec` (typically the release's own),
    or give the keyword form of :func:`noiseforge.ops.ldp_noise` (``epsilon``,
    ``lower``, ``upper``, ...), which builds the same spec; not both. Returns a
    NoisedBatch of ``len(batch) * copies`` rows, grouped by source row (row i's
    copies are adjacent), each tagged with the source row's record.
    """
    if not isinstance(batch, NoisedBatch):
        raise TypeError("add_noise_copies expands a NoisedBatch (released data), not raw data")
    data, records = batch._verified()
    noise = resolve_noise(
        noise,
        "add_noise_copies",
        epsilon=epsilon,
        lower=lower,
        upper=upper,
        mechanism=mechanism,
        delta=delta,
        unit=unit,
        levels=levels,
        clamp=clamp,
    )
    y = ldp_noise(data, noise, copies=copies, seed=seed, backend=backend)
    rows = y.reshape(len(batch) * copies, *data.shape[1:])
    return _derive(batch, rows, records.repeat_interleave(copies))


def superimpose(
    batch: NoisedBatch, pairs: int, *, weight: float = 0.5, seed: int | None = None
) -> NoisedBatch:
    """``pairs`` convex mixtures ``w * a + (1 - w) * b`` of random pairs of released rows.

    Mixed rows come from two records, so their record id is -1 (they feed the
    local model's training set, not per-input aggregation). ``seed`` makes the
    pairing reproducible; the pairing itself is not secret (the rows are already
    public to the client).
    """
    if not isinstance(batch, NoisedBatch):
        raise TypeError("superimpose mixes a NoisedBatch (released data), not raw data")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    if pairs < 0:
        raise ValueError(f"pairs must be >= 0, got {pairs}")
    if len(batch) < 2 and pairs:
        raise ValueError("superimposition needs at least two released rows")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    a = torch.randint(0, len(batch), (pairs,), generator=gen)
    b = (a + torch.randint(1, max(2, len(batch)), (pairs,), generator=gen)) % len(batch)
    released, _ = batch._verified()
    data = released.float()
    mixed = weight * data[a.to(data.device)] + (1.0 - weight) * data[b.to(data.device)]
    mixed_ids = torch.full((pairs,), -1, dtype=torch.int64)
    return _derive(batch, mixed.to(released.dtype), mixed_ids)


def concat(*batches: NoisedBatch) -> NoisedBatch:
    """Rows of several NoisedBatches descending from the same release, in order."""
    if not batches or not all(isinstance(b, NoisedBatch) for b in batches):
        raise TypeError("concat takes one or more NoisedBatch")
    first = batches[0]
    rid = first.release.release_id
    if any(b.release.release_id != rid for b in batches):
        raise ValueError("concat joins batches of one release only (their guarantee is shared)")
    parts = [b._verified() for b in batches]
    data = torch.cat([d for d, _ in parts])
    return _derive(first, data, torch.cat([r for _, r in parts]))
