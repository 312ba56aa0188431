"""Layer 1 of LDPKiT: releasing private inputs with local-DP noise.

:func:`release` is the only way to turn private data into a :class:`NoisedBatch`:
it charges the ledger (refusing over-budget records before any noise is drawn)
and adds noise with :func:`noiseforge.ops.ldp_noise`. Everything downstream
(the cloud client, layer-2 expansion) accepts only ``NoisedBatch``, so raw
private data cannot be sent anywhere by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from noiseforge.ldp.ledger import PrivacyLedger, Release
from noiseforge.ops import ldp_noise, ldp_noise_calibration
from noiseforge.ops.calibration import NoiseCalibration

_TOKEN = object()


@dataclass(frozen=True, eq=False)
class NoisedBatch:
    """Data released under local DP, or derived from such data by post-processing.

    ``data``: (M, ...) tensor; ``records``: (M,) int64, the private record each
    row comes from (-1 for rows mixed from several records); ``calibration``:
    the guarantee of the release it descends from.
    """

    data: torch.Tensor
    records: torch.Tensor
    calibration: NoiseCalibration
    release: Release | None
    _token: Any = None

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError(
                "NoisedBatch is created by noiseforge.ldp.release() (which adds noise and "
                "charges the ledger) or by post-processing a NoisedBatch, not directly"
            )

    def __len__(self) -> int:
        return self.data.shape[0]

    def derive(self, data: torch.Tensor, records: torch.Tensor) -> NoisedBatch:
        """Post-processing: new rows computed from this batch only (no privacy cost)."""
        return NoisedBatch(data, records, self.calibration, self.release, _TOKEN)


def release(
    x: torch.Tensor | np.ndarray,
    records,
    ledger: PrivacyLedger,
    *,
    epsilon: float,
    lower,
    upper,
    mechanism: str = "laplace",
    delta: float | None = None,
    unit: str = "feature",
    levels: int | None = None,
    clamp: bool = True,
    seed: int | None = None,
    backend: str | None = None,
    note: str = "",
) -> NoisedBatch:
    """Release each private input once with eps-LDP noise, charging the ledger.

    ``records`` are the (N,) integer ids of the rows of ``x`` in the ledger.
    The charge is the calibration's per-record total (``epsilon_total``), made
    before noise is drawn; a refused charge raises BudgetExceededError and
    releases nothing. Returns a (N, ...) NoisedBatch.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    ids = torch.as_tensor(np.asarray(records), dtype=torch.int64).reshape(-1)
    if ids.numel() != x.shape[0]:
        raise ValueError(f"records has {ids.numel()} ids for {x.shape[0]} inputs; give one per row")
    kwargs = dict(
        epsilon=epsilon,
        lower=lower,
        upper=upper,
        mechanism=mechanism,
        delta=delta,
        unit=unit,
        levels=levels,
        clamp=clamp,
    )
    cal = ldp_noise_calibration(x, **kwargs)
    entry = ledger.charge(
        ids.numpy(), cal.epsilon_total, cal.delta_total, mechanism=mechanism, note=note
    )
    noisy = ldp_noise(x, seed=seed, backend=backend, **kwargs)[:, 0]
    return NoisedBatch(noisy, ids, cal, entry, _TOKEN)
