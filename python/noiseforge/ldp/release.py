"""Layer 1 of LDPKiT: releasing private inputs with local-DP noise, sealed.

:func:`release` is the only way to turn private data into a
:class:`NoisedBatch`. It charges the ledger first (refusing over-budget records
before any noise is drawn), draws every record's noise from the record's own
stream, seals the result (:mod:`noiseforge.ldp.seal`) and binds the ledger
entry to it. Everything downstream -- layer-2 expansion, the cloud clients,
:func:`query_cloud` -- accepts only NoisedBatch and re-checks the seal just
before anything is sent, so raw private data cannot leave by mistake.

Randomness per record: record ``r`` of a release draws from the Philox stream
``ReleaseKey.stream_keys(r)`` (see :class:`noiseforge.random.ReleaseKey`):
* secret (default): a new secret key per call, or the ``key=`` you pass to draw
  several batches (or retries, in other processes) of one release -- a key
  serves one release id, the ledger refuses it for another; the stream also
  depends on the release and batch names, so a record in two batches gets
  independent noise, and never on the record's position or the process;
* ``seed=``: the key derives from the seed and the release id only, so the same
  seed gives the same noise for the same record whichever process or batch
  draws it -- reproducible and **not private**.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from noiseforge.ldp.ledger import PrivacyLedger, Release
from noiseforge.ldp.ledger.records import RecordSet
from noiseforge.ldp.seal import ReleaseIntegrityError, Seal, seal
from noiseforge.ops import registry
from noiseforge.ops.calibration import NoiseCalibration
from noiseforge.ops.ldp_noise import plan_ldp_noise, run_plan
from noiseforge.ops.noise_spec import (
    _DEFAULT_CLAMP,
    _DEFAULT_MECHANISM,
    _DEFAULT_UNIT,
    Mechanism,
    NoiseSpec,
    resolve_noise,
)
from noiseforge.random import ReleaseKey

_MINT = object()  # held by this module: the capability to create a NoisedBatch

_HOW = (
    "release private data with noiseforge.ldp.release(), and compute new rows from "
    "released ones with noiseforge.ldp.postprocess() (or add_noise_copies / superimpose / "
    "concat)"
)


class NoisedBatch:
    """Data released under local DP, or derived from such data by post-processing.

    ``data``: (M, ...) tensor; ``records``: (M,) int64, the private record each
    row comes from (-1 for rows mixed from several records); ``calibration``:
    the guarantee of the release it descends from; ``release``: the ledger
    entry that paid for it.

    A NoisedBatch is sealed: it cannot be constructed, copied, pickled or
    modified, and its rows are checked against the seal before they are sent
    (in-place edits of ``data`` or ``records`` are detected and refused).
    """

    __slots__ = ("_calibration", "_release", "_seal", "_start", "_stop")

    _calibration: NoiseCalibration
    _release: Release
    _seal: Seal
    _start: int
    _stop: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "NoisedBatch cannot be created directly: " + _HOW + " (both keep the privacy "
            "ledger and the seal in order)"
        )

    @classmethod
    def _mint(
        cls,
        token: object,
        data: torch.Tensor,
        records: torch.Tensor,
        calibration: NoiseCalibration,
        release: Release,
    ) -> NoisedBatch:
        if token is not _MINT:
            raise TypeError("NoisedBatch cannot be created directly: " + _HOW)
        s = seal(data, records, f"{release.release_id}\0{release.batch}")
        return cls._over(s, 0, s.rows(), calibration, release)

    @classmethod
    def _over(
        cls, s: Seal, start: int, stop: int, calibration: NoiseCalibration, release: Release
    ) -> NoisedBatch:
        obj = object.__new__(cls)
        for name, value in (
            ("_seal", s),
            ("_start", start),
            ("_stop", stop),
            ("_calibration", calibration),
            ("_release", release),
        ):
            object.__setattr__(obj, name, value)
        return obj

    # ------------------------------------------------------------------ reading
    @property
    def data(self) -> torch.Tensor:
        """The released rows (a view: edits are detected and refused at send time)."""
        return self._seal.data[self._start : self._stop]

    @property
    def records(self) -> torch.Tensor:
        return self._seal.records[self._start : self._stop]

    @property
    def calibration(self) -> NoiseCalibration:
        return self._calibration

    @property
    def release(self) -> Release:
        return self._release

    @property
    def digest(self) -> str:
        """SHA-256 of the rows as released (the same in every process)."""
        return self._seal.range_digest(self._start, self._stop)

    def __len__(self) -> int:
        return self._stop - self._start

    def __repr__(self) -> str:
        return (
            f"NoisedBatch({len(self)} rows of {tuple(self.data.shape[1:])}, release "
            f"{self._release.release_id!r} batch {self._release.batch!r}, "
            f"{self._calibration.mechanism})"
        )

    def _rows(self, start: int, stop: int) -> NoisedBatch:
        """Rows ``start:stop`` (0 <= start <= stop <= len), under the same seal."""
        return NoisedBatch._over(
            self._seal, self._start + start, self._start + stop, self._calibration, self._release
        )

    def _verified(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A private copy of (data, records), checked against the seal."""
        if not isinstance(getattr(self, "_seal", None), Seal):
            raise ReleaseIntegrityError(
                "this NoisedBatch carries no seal (a forged object); " + _HOW
            )
        return self._seal.verified_copy(self._start, self._stop)

    # ------------------------------------------------------------------ refusals
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a NoisedBatch is read-only; {_HOW}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a NoisedBatch is read-only")

    def __copy__(self) -> NoisedBatch:
        raise TypeError(f"a NoisedBatch cannot be copied (its seal belongs to it); {_HOW}")

    def __deepcopy__(self, memo: dict) -> NoisedBatch:
        raise TypeError(f"a NoisedBatch cannot be copied (its seal belongs to it); {_HOW}")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            "a NoisedBatch cannot be pickled: its seal is valid only in the process that "
            "released it. Send the released tensors (batch.data, batch.records) if another "
            "process only needs to read them"
        )

    def __getattr__(self, name: str) -> Any:
        if name == "derive":
            raise AttributeError(
                "NoisedBatch.derive() was removed: it wrapped any tensor as released data. "
                "Use noiseforge.ldp.postprocess(batch, fn), which hands fn the released rows "
                "only"
            )
        raise AttributeError(name)


def _derive(parent: NoisedBatch, data: torch.Tensor, records: torch.Tensor) -> NoisedBatch:
    """Seal ``data`` as post-processing of ``parent``: for noiseforge's own
    post-processing only, which computes ``data`` from ``parent._verified()``."""
    return NoisedBatch._mint(_MINT, data, records, parent.calibration, parent.release)


def postprocess(
    batch: NoisedBatch,
    fn: Callable[[torch.Tensor, torch.Tensor], Any],
) -> NoisedBatch:
    """New released rows computed from ``batch`` by ``fn`` (post-processing: free).

    ``fn(data, records)`` receives a private, verified copy of the released rows
    and their record ids and returns either a tensor with one row per input row
    (the records are kept), or ``(new_data, new_records)`` with every record id
    one of ``records`` or -1 (a row mixed from several records).

    Post-processing costs no privacy only if ``fn`` reads nothing but its
    arguments: a function that closes over private data and returns it defeats
    every check. That is the caller's responsibility; everything else (the
    ledger, the seal, the cloud's checks) stays in force.
    """
    if not isinstance(batch, NoisedBatch):
        raise TypeError(
            f"postprocess takes a NoisedBatch (released data), got {type(batch).__name__}"
        )
    if not callable(fn):
        raise TypeError("fn must be callable: fn(data, records) -> data or (data, records)")
    data, records = batch._verified()
    out = fn(data, records.clone())
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError("fn must return data, or a (data, records) pair")
        new_data, new_records = out
    else:
        new_data, new_records = out, records
    if not isinstance(new_data, torch.Tensor):
        raise TypeError(f"fn must return a torch.Tensor of rows, got {type(new_data).__name__}")
    new_records = torch.as_tensor(new_records, dtype=torch.int64).reshape(-1)
    if new_data.dim() < 1 or new_data.shape[0] != new_records.numel():
        raise ValueError(
            f"fn returned {new_data.shape[0] if new_data.dim() else 0} rows with "
            f"{new_records.numel()} record ids; give one id per row"
        )
    allowed = torch.unique(records)
    foreign = new_records[(new_records != -1) & ~torch.isin(new_records, allowed)]
    if foreign.numel():
        raise ValueError(
            f"fn returned record id {int(foreign[0])}, which is not in the batch: derived rows "
            "keep the id of the row they come from, or -1 for rows mixed from several"
        )
    return _derive(batch, new_data.detach().clone(), new_records)


def release(
    x: torch.Tensor | np.ndarray,
    records: Any,
    ledger: PrivacyLedger,
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
    key: ReleaseKey | None = None,
    release_id: str | None = None,
    batch: str | None = None,
    backend: str | None = None,
    note: str = "",
) -> NoisedBatch:
    """Release each private input once with eps-LDP noise, charging the ledger.

    ``records`` are the (N,) integer ids (>= 0, each once) of the rows of ``x``.
    The noise is ``noise``, a :class:`noiseforge.ops.NoiseSpec` (e.g.
    ``NoiseSpec(Laplace(2.0), lower=0.0, upper=1.0)``), or the keyword form of
    :func:`noiseforge.ops.ldp_noise` (``epsilon``, ``lower``, ``upper``,
    ``mechanism``, ``delta``, ``unit``, ``levels``, ``clamp``), which builds the same
    spec; giving both is a TypeError. The charge is the calibration's per-record total (``epsilon_total``,
    ``delta_total``), made in one ledger transaction before any noise is drawn;
    a refused charge raises BudgetExceededError and releases nothing. Returns a
    sealed (N, ...) NoisedBatch.

    Idempotency: ``(release_id, batch)`` names the charge (defaults: a new
    release id -- ``seed-<seed>`` for seeded releases -- and the digest of the
    record set). Calling again with the same names, records, data and noise
    key (a retry, possibly in another process) charges nothing and returns the
    identical noised rows; the same names with other data are refused
    (ReleaseConflictError) before anything is returned.

    Randomness: ``key`` (a :class:`noiseforge.random.ReleaseKey`) to share one
    secret release across batches and processes; default a fresh secret key.
    ``seed``: reproducible, NOT private noise that depends only on the seed, the
    release id and the record id. Give at most one of them.
    """
    if seed is not None and key is not None:
        raise ValueError("give seed= (reproducible, not private) or key= (secret), not both")
    if key is not None and not isinstance(key, ReleaseKey):
        raise TypeError(f"key must be a noiseforge.random.ReleaseKey, got {type(key).__name__}")
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError("x must be (N, ...) with one row per private record")
    if not isinstance(ledger, PrivacyLedger):
        raise TypeError(f"ledger must be a PrivacyLedger, got {type(ledger).__name__}")
    ids = np.asarray(records.numpy() if isinstance(records, torch.Tensor) else records)
    rs = RecordSet.from_ids(ids)
    if ids.size != x.shape[0]:
        raise ValueError(f"records has {ids.size} ids for {x.shape[0]} inputs; give one per row")
    if seed is not None:
        if release_id is None:
            release_id = f"seed-{seed}"
        key = ReleaseKey.from_seed(seed, release_id)
    elif key is None:
        key = ReleaseKey()
    noise = resolve_noise(
        noise,
        "release",
        epsilon=epsilon,
        lower=lower,
        upper=upper,
        mechanism=mechanism,
        delta=delta,
        unit=unit,
        levels=levels,
        clamp=clamp,
    )
    plan = plan_ldp_noise(x, noise)  # validates everything before the ledger is touched
    registry.select("ldp_noise", backend, plan, plan.device.type)
    cal = plan.calibration
    entry = ledger.charge(
        rs,
        cal.epsilon_total,
        cal.delta_total,
        mechanism=noise.mechanism.name,
        note=note,
        release_id=release_id,
        batch=batch,
        key_fingerprint=key.fingerprint,
    )
    ids64 = ids.reshape(-1).astype(np.int64)
    # seeded keys already derive from the release id; a secret key's streams also
    # depend on the release and batch names (a record in two batches: independent noise)
    context = "" if not key.is_secret else f"release\0{entry.release_id}\0batch\0{entry.batch}"
    keys = torch.from_numpy(key.stream_keys(ids64, context).view(np.int64))
    noisy = run_plan(plan, keys=keys, backend=backend)[:, 0]
    out = NoisedBatch._mint(_MINT, noisy, torch.from_numpy(ids64.copy()), cal, entry)
    # Bound to the ledger entry before it is returned: a retry that produced other
    # data (changed inputs) raises here, and its rows never leave this function.
    ledger.record_output(entry, out.digest)
    return out


def released_batch(
    ledger: PrivacyLedger,
    release_id: str,
    batch: str,
    data: torch.Tensor | np.ndarray,
    records: Any,
    noise: NoiseSpec,
) -> NoisedBatch:
    """The NoisedBatch of the charged batch ``(release_id, batch)``, rebuilt from its
    released rows after they crossed a process boundary (a NoisedBatch does not pickle).

    ``data`` and ``records`` are the rows and record ids as :func:`release` returned
    them (for example ``out.data.numpy()`` and ``out.records.numpy()`` sent to a
    worker); ``noise`` is the release's NoiseSpec. Nothing is trusted that the
    ledger does not confirm: the entry must exist and be bound to an output
    (``release`` binds it before it returns), its record set must be ``records``,
    its charge must be the charge ``noise`` gives rows of this shape, and the
    digest of ``data`` and ``records`` must be the bound digest -- so these are
    exactly the bytes ``release`` produced, in the same order. Only then is the
    result sealed; it descends from the ledger's entry, like the original.

    Raises ReleaseIntegrityError when the ledger does not confirm the rows (never
    released, other records, other bytes, another charge), TypeError/ValueError
    for arguments of the wrong kind.
    """
    if not isinstance(ledger, PrivacyLedger):
        raise TypeError(f"ledger must be a PrivacyLedger, got {type(ledger).__name__}")
    if not isinstance(noise, NoiseSpec):
        raise TypeError(f"noise must be a noiseforge.ops.NoiseSpec, got {type(noise).__name__}")
    x = torch.from_numpy(np.array(data, copy=True)) if isinstance(data, np.ndarray) else data
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"data must be a torch.Tensor or numpy array, got {type(data).__name__}")
    x = x.detach().cpu().clone()
    ids = torch.as_tensor(
        np.array(records.numpy() if isinstance(records, torch.Tensor) else records, copy=True),
        dtype=torch.int64,
    ).reshape(-1)
    if x.dim() < 1 or x.shape[0] != ids.numel():
        raise ValueError(
            f"data has {x.shape[0] if x.dim() else 0} rows and records {ids.numel()} ids; "
            "give one id per row, as release() returned them"
        )
    where = f"batch {batch!r} of release {release_id!r}"
    entry = ledger.entry(release_id, batch)
    if entry is None or entry.output_digest is None:
        raise ReleaseIntegrityError(
            f"{where} was never released (no ledger entry binds its rows); only rows released "
            "by noiseforge.ldp.release() may leave the client"
        )
    try:
        same_records = np.array_equal(RecordSet.from_ids(ids.numpy()).ranges, entry.records.ranges)
    except (TypeError, ValueError):
        same_records = False
    if not same_records:
        raise ReleaseIntegrityError(
            f"{where}: these are not the records the ledger charged for it; refusing them"
        )
    cal = plan_ldp_noise(x, noise).calibration
    if (
        cal.epsilon_total != entry.epsilon
        or cal.delta_total != entry.delta
        or noise.mechanism.name != entry.mechanism
    ):
        raise ReleaseIntegrityError(
            f"{where} was charged eps={entry.epsilon:g}, delta={entry.delta:g} "
            f"({entry.mechanism}), not the eps={cal.epsilon_total:g}, delta={cal.delta_total:g} "
            f"({noise.mechanism.name}) of the noise given; pass the release's own NoiseSpec"
        )
    out = NoisedBatch._mint(_MINT, x, ids, cal, entry)
    if out.digest != entry.output_digest:
        raise ReleaseIntegrityError(
            f"{where}: its rows are not the rows the ledger says were released (changed, or "
            "from elsewhere); refusing them"
        )
    return out
