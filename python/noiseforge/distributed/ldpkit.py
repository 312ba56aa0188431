"""LDPKiT and standard eps-LDP as Ray Data jobs, with one privacy budget for every worker.

The stages (each a Ray Data operator; ``workers`` sets the actor pools' size):

1. **release** (:func:`release_block`, tasks): every block of private rows is
   released by :func:`noiseforge.ldp.release` in the worker, which charges the
   shared ledger *before* it draws noise. The ledger travels as its pickle,
   which reopens the same store (an SQLite file or a PostgreSQL URL) in the
   worker. All blocks share one release id and noise key; each block's batch
   name derives from its record ids (:func:`block_name`), so a retried or
   duplicated block repeats the same charge -- the ledger replays it, charges
   nothing and the same key draws identical noise -- and can never draw new
   noise uncharged. A block leaves the stage as one packed row: its release id,
   batch name, record ids, positions and noised rows.
2. **expand + query** (:class:`CloudQuery`, an actor pool of cloud clients:
   an :class:`~noiseforge.ldp.http.HTTPCloud` per actor, or an in-process model
   per actor): each packed block first becomes a sealed NoisedBatch again through
   :func:`noiseforge.ldp.released_batch`, which checks it against the ledger (the
   entry of its release id and batch exists, holds these records at this charge,
   and its output digest -- bound by ``release`` before the rows were returned --
   equals the digest of the rows as they arrived); a block that fails is refused
   with ReleaseIntegrityError and nothing of it is sent. Only then are the layer-2
   noise copies drawn (:func:`noiseforge.ldp.postprocess`, free) and the block
   asked of the cloud through :func:`noiseforge.ldp.query_cloud` itself (its seal
   check, answer checks and retries; with ``checkpoint=``, one answers file per
   block, so a resumed job asks only what is missing). A record's rows (its
   release and its copies) never span blocks, so its answers are aggregated
   (:func:`~noiseforge.ops.soft_label_sum`, bit-identical in any order) in the
   operator.
3. **superimposition** (:class:`MixedQuery`, actors): the pairs are drawn on
   the driver exactly as the local engine draws them; each actor mixes them from
   the released blocks, each checked against the ledger as in stage 2, and asks
   the cloud.
4. **training** of the local model on one worker (a Ray task), on the query set
   in the local engine's order, and **private inference** as ``map_batches``.

With ``seed=`` every random draw is the local engine's: the release's noise
derives from the seed, the release id and the record id; the noise copies use
the seeded stream at the counters the local engine would use (reserved on the
driver, offset by each row's position); the pairs come from the same generator.
Without a seed, the copies and the pairs derive from the release's secret key
(:func:`copies_context`), so that a job resumed with the same key asks the same
queries.
So ``ldpkit_ray(..., seed=s)`` equals ``ldpkit(..., seed=s)`` bit for bit (the
labels and the aggregated answers), whatever the blocks and workers.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import itertools
import math
import os
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from noiseforge._common.validation import check_int
from noiseforge.distributed.runtime import (
    ACTOR_CPUS,
    TASK_CPUS,
    configure_threads,
    connect,
    require_ray,
)
from noiseforge.ldp.cloud import CloudModel
from noiseforge.ldp.expand import concat
from noiseforge.ldp.http import HTTPCloud
from noiseforge.ldp.ledger import PrivacyLedger, RecordSet
from noiseforge.ldp.models import predict_labels, train_classifier
from noiseforge.ldp.query import query_cloud
from noiseforge.ldp.release import NoisedBatch, postprocess, release, released_batch
from noiseforge.ops import ldp_noise, soft_label_sum
from noiseforge.ops.ldp_noise import counters_per_input
from noiseforge.ops.noise_spec import NoiseSpec
from noiseforge.random import ReleaseKey, seeded_generator

__all__ = [
    "CloudQuery",
    "MixedQuery",
    "RayLDPKiTResult",
    "block_name",
    "ldpkit_ray",
    "private_dataset",
    "ray_release",
    "read_private",
    "release_block",
    "standard_ldp_ray",
    "verified_rows",
    "with_positions",
]

RECORD, POSITION, X = "record", "position", "x"


# ----------------------------------------------------------------------------- inputs
def private_dataset(x: Any, records: Any = None, *, block_rows: int = 1024) -> Any:
    """A Ray Dataset of private inputs: columns ``position`` (row index), ``record``
    (the ids, default ``0..N-1``) and ``x`` (the rows), in blocks of ``block_rows``.

    ``x``: (N, ...) tensor or numpy array. The blocks go to the object store from
    this process; for data larger than one machine, read it with Ray Data
    (``ray.data.read_parquet`` / ``read_numpy``) into the same columns instead.
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim < 1:
        raise ValueError("x must be (N, ...) with one row per private record")
    n = arr.shape[0]
    ids = np.arange(n, dtype=np.int64) if records is None else _ids(records)
    if ids.size != n:
        raise ValueError(f"records has {ids.size} ids for {n} inputs; give one per row")
    if not (isinstance(block_rows, int) and block_rows >= 1):
        raise ValueError(f"block_rows must be an int >= 1, got {block_rows!r}")
    return _columns_dataset(
        {POSITION: np.arange(n, dtype=np.int64), RECORD: ids, X: np.ascontiguousarray(arr)},
        block_rows,
    )


def read_private(
    path: str | os.PathLike,
    *,
    column: str = X,
    record_column: str = RECORD,
    block_rows: int = 1024,
) -> Any:
    """A Ray Dataset of private inputs, ready for :func:`ldpkit_ray`,
    :func:`standard_ldp_ray` and :func:`ray_release` (columns ``position``,
    ``record``, ``x``).

    ``path``: a Parquet file or folder (``column`` holds each record's row -- a
    fixed-shape tensor or list column -- and ``record_column`` its integer id), read
    by the workers themselves (on a cluster, from storage every node sees); only the
    record ids come to the driver (8 bytes a record), whose order sets each row's
    ``position``, so results come back in record-id order. Or a NumPy ``.npy`` file
    of (N, ...) rows with ids ``0..N-1``, memory-mapped here and sent in blocks of
    ``block_rows`` (for data that fits one machine).
    """
    ray = require_ray()
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no private inputs at {p}")
    if p.endswith(".npy"):
        return private_dataset(np.load(p, mmap_mode="r"), block_rows=block_rows)
    ds = ray.data.read_parquet(p)
    names = ds.schema().names
    missing = [c for c in (column, record_column) if c not in names]
    if missing:
        raise ValueError(
            f"{p} has no column {missing[0]!r} (its columns: {', '.join(names)}); name the "
            "rows with column= and the record ids with record_column="
        )
    ds = ds.select_columns([record_column, column])
    if record_column != RECORD:
        ds = ds.rename_columns({record_column: RECORD})
    return with_positions(ds, column)


def with_positions(ds: Any, column: str = X) -> Any:
    """``ds`` (columns ``record`` and ``column``) with a ``position`` column: each
    row's rank among the record ids, which must be integers, each once. The ids are
    collected on the driver (8 bytes a record); the rows stay in the workers.

    Blocks: the release stage charges each batch Ray Data forms from this dataset
    (``block_rows`` rows or fewer, in the files' order: the engine keeps Ray Data's
    order). A resumed job that reads the same files with the same ``block_rows``
    forms the same batches and replays their charges; a batch that forms otherwise
    is a new charge -- refused when it would take a record past its budget, never a
    release without a charge."""
    require_ray()
    if RECORD not in ds.schema().names:
        raise ValueError(f"the dataset needs a {RECORD!r} column of integer record ids")
    parts = [
        np.asarray(b[RECORD])
        for b in ds.select_columns([RECORD]).iter_batches(batch_size=None, batch_format="numpy")
    ]
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"record ids must be integers, got {ids.dtype}")
    ids = np.sort(ids.astype(np.int64))
    if ids.size > 1 and (dup := ids[1:][ids[1:] == ids[:-1]]).size:
        raise ValueError(
            f"record id {int(dup[0])} appears more than once; each private record is one row"
        )
    return ds.map_batches(
        _add_positions,
        batch_format="numpy",
        fn_kwargs=dict(ids=ids, column=column),
        num_cpus=TASK_CPUS,
    )


def _positioned(ds: Any) -> Any:
    """``ds`` with its ``position`` column (:func:`with_positions` when it has none; a
    column of its own must be the positions ``0..N-1``, each once)."""
    if POSITION not in ds.schema().names:
        return with_positions(ds)
    parts = [
        np.asarray(b[POSITION])
        for b in ds.select_columns([POSITION]).iter_batches(batch_size=None, batch_format="numpy")
    ]
    got = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    if not np.array_equal(got, np.arange(got.size)):
        raise ValueError(
            f"the dataset's {POSITION!r} column is not the row positions 0..{got.size - 1}, "
            "each once; drop it (the engine numbers the rows by record id) or fix it"
        )
    return ds


def _add_positions(batch: dict[str, np.ndarray], *, ids: np.ndarray, column: str) -> dict:
    """The UDF of :func:`with_positions` (rows as one (M, ...) array)."""
    records = np.asarray(batch[RECORD], dtype=np.int64)
    rows = batch[column]
    if rows.dtype == object:  # a list column: one array per row
        rows = np.stack([np.asarray(r) for r in rows]) if len(rows) else rows
    return {POSITION: np.searchsorted(ids, records), RECORD: records, X: rows}


def _columns_dataset(columns: dict[str, np.ndarray], block_rows: int) -> Any:
    """A Ray Dataset of equal-length numpy ``columns``, in blocks of ``block_rows`` rows."""
    ray = require_ray()
    from ray.data.block import BlockAccessor

    n = len(next(iter(columns.values())))
    blocks = [
        BlockAccessor.batch_to_block({k: v[s : s + block_rows] for k, v in columns.items()})
        for s in range(0, max(n, 1), block_rows)
    ]
    return ray.data.from_arrow(blocks)


def _ids(records: Any) -> np.ndarray:
    """The record ids as int64, checked as the local release checks them (integers,
    >= 0, each once: no id is rounded, no record charged twice)."""
    ids = records.numpy() if isinstance(records, torch.Tensor) else np.asarray(records)
    RecordSet.from_ids(ids)
    return ids.reshape(-1).astype(np.int64)


def block_name(records: np.ndarray) -> str:
    """The batch name of the block holding ``records`` (in order): the same for every
    attempt at that block, different for any other record set."""
    ids = np.ascontiguousarray(np.asarray(records, dtype=np.int64))
    return "block-" + hashlib.sha256(b"noiseforge/ray-block/v1\0" + ids.tobytes()).hexdigest()[:40]


# ----------------------------------------------------------------------------- release
def release_block(
    batch: dict[str, np.ndarray],
    *,
    ledger: PrivacyLedger,
    noise: NoiseSpec,
    release_id: str,
    seed: int | None = None,
    key: ReleaseKey | None = None,
    column: str = X,
    note: str = "",
) -> dict[str, np.ndarray]:
    """Release one block of private rows (the UDF of the release stage).

    Charges ``ledger`` for the block's records under ``(release_id,
    block_name(records))`` before drawing noise (a retry of the block replays the
    charge and draws the same noise), and returns the block as one packed row:
    ``release_id``, ``batch``, ``records``, ``positions``, ``data`` (the noised
    rows) and ``digest`` (what the ledger bound to them).
    """
    configure_threads()
    records = np.asarray(batch[RECORD], dtype=np.int64)
    positions = np.asarray(batch[POSITION], dtype=np.int64) if POSITION in batch else records
    x = np.ascontiguousarray(batch[column])
    name = block_name(records)
    out = release(
        torch.from_numpy(x),
        records,
        ledger,
        noise,
        seed=seed,
        key=key,
        release_id=release_id,
        batch=name,
        note=note,
    )
    data = out.data.detach().cpu().numpy().copy()
    return {
        "release_id": np.array([release_id]),
        "batch": np.array([name]),
        "records": out.records.numpy().copy()[None],
        "positions": positions.copy()[None],
        "data": data[None],
        "digest": np.array([out.digest]),
    }


def _refuse_other_blocks(
    ledger: PrivacyLedger, release_id: str, ids: np.ndarray, batch_size: int
) -> None:
    """Before anything is charged: a release id that already charged some of ``ids``
    in blocks this job would not form (another ``batch_size``, other record order) is
    refused -- the job would charge those records a second time instead of replaying."""
    if len(ids) == 0:
        return
    names = {block_name(ids[s : s + batch_size]) for s in range(0, len(ids), batch_size)}
    for entry in ledger.entries(release_id):
        if entry.batch in names:
            continue
        mine = np.isin(np.asarray(entry.records.to_numpy()), ids)
        if mine.any():
            raise ValueError(
                f"release {release_id!r} already charged record "
                f"{int(np.asarray(entry.records.to_numpy())[mine][0])} in a block this job "
                f"would not form (entry {entry.seq}, batch {entry.batch!r}): a resumed job needs "
                "the first run's records in the same order and the same block size "
                "(batch_size / block_rows); a new job needs a new release id"
            )


def ray_release(
    data: Any,
    records: Any,
    ledger: PrivacyLedger,
    noise: NoiseSpec,
    *,
    release_id: str | None = None,
    seed: int | None = None,
    key: ReleaseKey | None = None,
    batch_size: int = 1024,
    column: str = X,
    note: str = "",
) -> tuple[Any, str, ReleaseKey | None]:
    """The release stage: ``(dataset of packed released blocks, release id, key)``.

    ``data``: a Ray Dataset with columns ``record`` and ``column`` (and
    optionally ``position``; ``records`` is then ignored), or an (N, ...) array
    or tensor with its ``records`` ids (default ``0..N-1``). ``batch_size``: rows
    per released block (one ledger entry each). ``seed``: reproducible, NOT
    private noise (the release id defaults to ``seed-<seed>``, as in
    :func:`noiseforge.ldp.release`); else ``key`` (default a new secret
    :class:`ReleaseKey`) is shared by every block. A block whose task failed with
    its worker (a killed process, a lost node) is tried again by Ray -- safe,
    because the retry replays its charge and draws the same noise.

    The dataset is lazy; the ledger is charged as it executes (materialize it,
    or consume it with the next stages).
    """
    ray = require_ray()
    _data_context()
    if seed is not None and key is not None:
        raise ValueError("give seed= (reproducible, not private) or key= (secret), not both")
    if not isinstance(ledger, PrivacyLedger):
        raise TypeError(f"ledger must be a PrivacyLedger, got {type(ledger).__name__}")
    try:
        ledger.__reduce__()
    except TypeError as exc:
        raise TypeError(f"the ray engine's workers must open the ledger: {exc}") from None
    if not isinstance(noise, NoiseSpec):
        raise TypeError(f"noise must be a noiseforge.ops.NoiseSpec, got {type(noise).__name__}")
    if seed is not None:
        release_id = release_id or f"seed-{seed}"
    else:
        release_id = release_id or uuid.uuid4().hex
        key = key or ReleaseKey()
    if not isinstance(data, ray.data.Dataset):
        n = len(data)
        ids = np.arange(n, dtype=np.int64) if records is None else _ids(records)
        _refuse_other_blocks(ledger, release_id, ids, batch_size)
        data = private_dataset(data, ids, block_rows=batch_size)
    ds = data.map_batches(
        release_block,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs=dict(
            ledger=ledger,
            noise=noise,
            release_id=release_id,
            seed=seed,
            key=key,
            column=column,
            note=note,
        ),
        num_cpus=TASK_CPUS,
    )
    return ds, release_id, key


# ----------------------------------------------------------------------------- checks
def verified_rows(
    row: dict[str, Any], ledger: PrivacyLedger, noise: NoiseSpec
) -> tuple[NoisedBatch, np.ndarray]:
    """``(batch, positions)`` of a packed released block: its rows as a sealed
    :class:`~noiseforge.ldp.NoisedBatch`, rebuilt by
    :func:`noiseforge.ldp.released_batch` only after the ledger confirmed them (the
    entry ``(release_id, batch)`` exists, holds exactly these records, was charged
    what ``noise`` costs, and its bound output digest is the digest of these rows).
    Raises ReleaseIntegrityError otherwise (nothing of the block is sent)."""
    batch = released_batch(
        ledger,
        str(row["release_id"]),
        str(row["batch"]),
        np.array(row["data"], copy=True),
        np.array(row["records"], dtype=np.int64, copy=True).reshape(-1),
        noise,
    )
    return batch, np.array(row["positions"], dtype=np.int64, copy=True).reshape(-1)


# ----------------------------------------------------------------------------- the cloud
@dataclass(frozen=True)
class _CloudSpec:
    """How an actor gets its cloud client: an HTTP URL, or a pickled model."""

    url: str | None = None
    timeout: float = 60.0
    max_response_bytes: int = 1 << 30
    model: CloudModel | None = None

    @classmethod
    def of(cls, cloud: CloudModel) -> _CloudSpec:
        if not isinstance(cloud, CloudModel):
            raise TypeError(
                f"cloud must be a noiseforge.ldp.CloudModel, got {type(cloud).__name__}"
            )
        if isinstance(cloud, HTTPCloud):
            # an HTTPCloud's settings travel, not its connection (one per actor)
            return cls(
                url=cloud.url, timeout=cloud.timeout, max_response_bytes=cloud.max_response_bytes
            )
        return cls(model=cloud)

    def open(self) -> CloudModel:
        if self.url is None:
            return self.model
        return HTTPCloud(self.url, timeout=self.timeout, max_response_bytes=self.max_response_bytes)


@dataclass(frozen=True)
class _Asking:
    """How an actor asks the cloud: :func:`noiseforge.ldp.query_cloud`'s batch size,
    retries and backoff, and the job's checkpoint folder (None: no checkpoints)."""

    batch_size: int = 1024
    retries: int = 3
    backoff: float = 0.5
    checkpoint: str | None = None

    def ask(self, cloud: CloudModel, queries: NoisedBatch, *name: str) -> torch.Tensor:
        """The checked answers to ``queries``; with a checkpoint folder, kept in the
        file of ``name`` after every request, and read back (asking only the rest)
        when a resumed job sends the same query set."""
        path = None
        if self.checkpoint is not None:
            digest = hashlib.sha256("\0".join(name).encode()).hexdigest()[:40]
            path = os.path.join(self.checkpoint, f"answers-{digest}.pt")
        return query_cloud(
            cloud,
            queries,
            batch_size=self.batch_size,
            retries=self.retries,
            backoff=self.backoff,
            checkpoint=path,
            progress=False,
        )


def _rows_of(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    n = len(batch["batch"])
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def copies_context(release_id: str, batch: str) -> str:
    """The stream context of a secret release's layer-2 noise copies (block ``batch``):
    they derive from the release's key under this context, so a resumed job draws the
    same copies and its checkpointed answers still belong to them."""
    return f"noise copies\0{release_id}\0{batch}"


class CloudQuery:
    """Actor of the expand + query stage: verify each packed block against the ledger,
    draw its noise copies, ask the cloud, aggregate per record.

    ``copy_stream``: ``(seed, first_counter)`` of seeded copies (the local engine's
    counters, reserved on the driver), or None for a secret release, whose copies
    derive from the release's ``key`` (:func:`copies_context`). The copies are
    post-processing of the verified block (:func:`noiseforge.ldp.postprocess`), and
    what is sent is one NoisedBatch asked through :func:`noiseforge.ldp.query_cloud`
    (its seal checked before every request). Emits one packed row per block:
    ``positions``, ``records``, ``data`` and ``answers`` of the released rows,
    ``copy_data`` / ``copy_answers`` (row i's copies adjacent) and ``aggregated``
    (the mean answer over each record's rows).
    """

    def __init__(
        self,
        cloud: _CloudSpec,
        ledger: PrivacyLedger,
        noise: NoiseSpec,
        copies: int = 0,
        copy_stream: tuple[int, int] | None = None,
        key: ReleaseKey | None = None,
        asking: _Asking = _Asking(),
    ) -> None:
        if copies and copy_stream is None and key is None:
            raise ValueError("secret noise copies need the release's key")
        self.cloud, self.ledger, self.asking = cloud.open(), ledger, asking
        self.noise, self.copies, self.copy_stream, self.key = noise, copies, copy_stream, key

    def _noise_copies(
        self, data: torch.Tensor, records: torch.Tensor, positions: np.ndarray, context: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.copies
        feature = data.shape[1:]
        rows = records.repeat_interleave(k)
        if self.copy_stream is None:
            keys = self.key.stream_keys(records.numpy(), context).view(np.int64)
            y = ldp_noise(data, self.noise, copies=k, keys=keys)
            return y.reshape(data.shape[0] * k, *feature), rows
        seed, first = self.copy_stream
        # input n of the local engine's one call starts at counter first + n * per_input
        per_input = counters_per_input(self.noise.mechanism.name, k, math.prod(feature))
        out = []
        starts = np.flatnonzero(np.diff(positions, prepend=positions[:1] - 2) != 1)
        bounds = [*starts.tolist(), len(positions)]
        for s, e in itertools.pairwise(bounds):
            offset = first + int(positions[s]) * per_input
            y = ldp_noise(data[s:e], self.noise, copies=k, seed=seed, offset=offset)
            out.append(y.reshape((e - s) * k, *feature))
        return torch.cat(out), rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        configure_threads()
        outs = []
        for row in _rows_of(batch):
            released, positions = verified_rows(row, self.ledger, self.noise)
            rid, name = released.release.release_id, released.release.batch
            m = len(released)
            queries = released
            if self.copies:
                draw = functools.partial(
                    self._noise_copies, positions=positions, context=copies_context(rid, name)
                )
                queries = concat(released, postprocess(released, draw))
            answers = self.asking.ask(self.cloud, queries, rid, name)
            data = queries.data
            index = torch.cat([torch.arange(m), torch.arange(m).repeat_interleave(self.copies)])
            aggregated = soft_label_sum(index, answers, m, mean=True)
            outs.append(
                {
                    "positions": positions,
                    "records": released.records.numpy().copy(),
                    "data": data[:m].numpy().copy(),
                    "answers": answers[:m].numpy(),
                    "copy_data": data[m:].numpy().copy(),
                    "copy_answers": answers[m:].numpy(),
                    "aggregated": aggregated.numpy(),
                }
            )
        return {k: _ragged([o[k] for o in outs]) for k in outs[0]} if outs else {}


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """One packed column: a (rows, ...) array when the shapes agree, else an object array."""
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    col = np.empty(len(arrays), dtype=object)
    col[:] = arrays
    return col


class MixedQuery:
    """Actor of the superimposition stage: mixes pairs of released rows and asks the cloud.

    ``released``: a one-element list holding the ObjectRefs of the released blocks
    (packed rows); each block is checked against the ledger (:func:`verified_rows`)
    and the mixed rows are post-processing of the verified rows, sent as one
    NoisedBatch through :func:`noiseforge.ldp.query_cloud`. Input rows: ``pair``
    (index), ``a`` and ``b`` (positions); emits ``pair``, ``data`` (the mixed rows)
    and ``answers``.
    """

    def __init__(
        self,
        cloud: _CloudSpec,
        ledger: PrivacyLedger,
        noise: NoiseSpec,
        released: list,
        weight: float,
        asking: _Asking = _Asking(),
    ) -> None:
        self.cloud, self.ledger, self.noise, self.asking = cloud.open(), ledger, noise, asking
        self.refs, self.weight = released[0], weight
        self.table: NoisedBatch | None = None

    def _released(self) -> NoisedBatch:
        """Every released row, in position order, as one NoisedBatch (built once)."""
        if self.table is None:
            import ray
            from ray.data.block import BlockAccessor

            pieces: list[tuple[NoisedBatch, np.ndarray]] = []
            for block in ray.get(list(self.refs)):
                batch = BlockAccessor.for_block(block).to_batch_format("numpy")
                for row in _rows_of(batch):
                    pieces.append(verified_rows(row, self.ledger, self.noise))
            order = torch.from_numpy(np.argsort(np.concatenate([p for _, p in pieces])))
            joined = concat(*(b for b, _ in pieces))
            self.table = postprocess(joined, lambda d, r: (d[order], r[order]))
        return self.table

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        configure_threads()
        table = self._released()
        a = torch.from_numpy(np.asarray(batch["a"], dtype=np.int64))
        b = torch.from_numpy(np.asarray(batch["b"], dtype=np.int64))
        w = self.weight

        def mix(data: torch.Tensor, records: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = data.float()
            mixed = (w * f[a] + (1.0 - w) * f[b]).to(data.dtype)
            return mixed, torch.full((len(a),), -1, dtype=torch.int64)

        mixed = postprocess(table, mix)
        pair = np.asarray(batch["pair"], dtype=np.int64)
        first, last = (str(int(pair[0])), str(int(pair[-1]))) if len(pair) else ("", "")
        answers = self.asking.ask(
            self.cloud, mixed, table.release.release_id, "superimposed", first, last
        )
        return {"pair": pair, "data": mixed.data.numpy().copy(), "answers": answers.numpy()}


# ----------------------------------------------------------------------------- training
class _Predict:
    """Actor of private inference: the local model's labels for blocks of private rows."""

    def __init__(self, model: list, column: str = X) -> None:
        import ray

        self.model = ray.get(model[0])
        self.column = column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        configure_threads()
        x = torch.from_numpy(np.ascontiguousarray(batch[self.column]))
        labels = predict_labels(self.model, x)
        return {POSITION: np.asarray(batch[POSITION]), "label": labels.numpy()}


def _train(model: torch.nn.Module, x: np.ndarray, targets: np.ndarray, kwargs: dict) -> Any:
    """The local model trained on one worker (the body of a Ray task)."""
    configure_threads()
    train_classifier(model, torch.from_numpy(x), torch.from_numpy(targets), **kwargs)
    return model


@dataclass
class RayLDPKiTResult:
    """What :func:`ldpkit_ray` returns (the fields of ``LDPKiTResult`` that cross
    processes: a NoisedBatch is valid only in the process that released it)."""

    predictions: torch.Tensor  # (N,) local model's labels, in the inputs' order
    aggregated: torch.Tensor  # (N, C) mean cloud answer over each input's own rows
    local_model: torch.nn.Module
    queries: int  # rows sent to the cloud
    release_id: str
    records: torch.Tensor  # (N,) the record ids, in the inputs' order
    blocks: int  # released blocks (ledger entries)


def _sorted_stage(ds: Any, keys: list[str]) -> dict[str, list[np.ndarray]]:
    """Every packed row of a stage's output, columns as lists of per-block arrays."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k in keys:
            out[k].extend(list(batch[k]))
    return out


def _frees_actors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a job and free its actor pools when it ends, however it ends.

    Ray Data keeps a finished dataset's actors (and the CPUs they hold) alive until
    the dataset is garbage-collected, and a raised error's traceback keeps the
    datasets alive: on a small node the next job would wait for CPUs forever."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            seen: set[int] = set()
            link: BaseException | None = exc
            while link is not None and id(link) not in seen:  # the error and its causes
                seen.add(id(link))
                traceback.clear_frames(link.__traceback__)
                link = link.__cause__ or link.__context__
            raise
        finally:
            gc.collect()

    return run


def _blocks(x: Any, rows: int) -> int | None:
    """How many blocks of ``rows`` an in-memory ``x`` makes (None for a Dataset)."""
    if not hasattr(x, "shape") or not len(x.shape):
        return None
    return max(1, -(-int(x.shape[0]) // rows))


def _pool(workers: int, blocks: int | None = None) -> Any:
    """A fixed pool of ``workers`` actors, but no more than there are ``blocks``."""
    import ray.data

    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    size = workers if not blocks else max(1, min(workers, int(blocks)))
    return ray.data.ActorPoolStrategy(size=size)


def _data_context(progress: bool | None = None) -> None:
    """Ray Data's settings for noiseforge's jobs: a failed operator raises the error of
    noiseforge (BudgetExceededError, ReleaseIntegrityError, CloudQueryError), not a
    wrapper; progress bars only when ``progress`` (None: leave them as they are)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.raise_original_map_exception = True
    # blocks keep their order through every stage: the release stage's batches are then
    # the same record sets on every run, and a resumed job replays its charges
    ctx.execution_options.preserve_order = True
    if progress is not None:
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = progress


def _check_resumable(checkpoint: Any, seed: int | None, key: Any, release_id: Any) -> None:
    """A checkpointed job must be one that can be resumed: seeded, or a secret release
    whose id and key the caller holds (a fresh id and key would be lost with the job)."""
    if checkpoint is not None and seed is None and (key is None or release_id is None):
        raise ValueError(
            "checkpoint= with secret noise needs release_id= and key= (a ReleaseKey you keep, "
            "as private as the data): a resumed job must draw the same noise, and the ledger "
            "refuses its release id under a new key"
        )


def _asking(checkpoint: str | os.PathLike | None, batch_size: int) -> _Asking:
    """The actors' way of asking, with the checkpoint folder made and checked here."""
    if checkpoint is None:
        return _Asking(batch_size=batch_size)
    folder = os.path.abspath(os.fspath(checkpoint))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(
            f"checkpoint {folder} is a file; the ray engine keeps one answers file per block "
            "in a folder: give a folder"
        )
    parent = os.path.dirname(folder)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"the checkpoint's parent folder {parent} does not exist")
    os.makedirs(folder, exist_ok=True)
    return _Asking(batch_size=batch_size, checkpoint=folder)


def _pairs_seed(key: ReleaseKey, release_id: str) -> int:
    """The generator seed of a secret release's superimposed pairs: derived from its
    key, so that a resumed job draws the same pairs (and needs no file of them)."""
    word = key.stream_keys(np.zeros(1, np.int64), f"superimposed pairs\0{release_id}")[0]
    return int(word) & (2**63 - 1)


@_frees_actors
def standard_ldp_ray(
    x: Any,
    records: Any,
    cloud: CloudModel,
    ledger: PrivacyLedger,
    noise: NoiseSpec,
    *,
    seed: int | None = None,
    key: ReleaseKey | None = None,
    batch_size: int = 1024,
    progress: bool = True,
    release_id: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    workers: int = 2,
    address: str | None = None,
) -> torch.Tensor:
    """:func:`noiseforge.ldp.standard_ldp` on Ray: release, ask the cloud, the top answer.

    ``x``: an (N, ...) array or tensor with its ``records``, or a Ray Dataset as
    :func:`ldpkit_ray` takes. ``batch_size`` rows per released block and per cloud request; ``workers``
    cloud clients; ``address`` the Ray cluster (see
    :func:`noiseforge.distributed.connect`); ``checkpoint``, ``key`` and
    ``release_id``: resuming a job, as in :func:`ldpkit_ray`. Returns (N,) labels in
    the inputs' order.
    """
    _check_resumable(checkpoint, seed, key, release_id)
    connect(address)
    _data_context(progress)
    asking = _asking(checkpoint, batch_size)
    if isinstance(x, require_ray().data.Dataset):
        x = _positioned(x)
    released, _, _ = ray_release(
        x, records, ledger, noise, release_id=release_id, seed=seed, key=key, batch_size=batch_size
    )
    answered = released.map_batches(
        CloudQuery,
        batch_size=None,
        batch_format="numpy",
        fn_constructor_kwargs=dict(
            cloud=_CloudSpec.of(cloud), ledger=ledger, noise=noise, asking=asking
        ),
        compute=_pool(workers, _blocks(x, batch_size)),
        num_cpus=ACTOR_CPUS,
    )
    cols = _sorted_stage(answered, ["positions", "answers"])
    positions = np.concatenate(cols["positions"])
    answers = np.concatenate(cols["answers"])
    labels = torch.from_numpy(answers.argmax(1)).to(torch.int64)
    out = torch.empty_like(labels)
    out[torch.from_numpy(np.array(positions))] = labels
    return out


@_frees_actors
def ldpkit_ray(
    x: Any,
    records: Any,
    cloud: CloudModel,
    ledger: PrivacyLedger,
    noise: NoiseSpec,
    make_local_model: Callable[[], torch.nn.Module],
    *,
    noise_copies: int = 2,
    superimposed: float = 1.0,
    weight: float = 0.5,
    targets: str = "answers",
    epochs: int = 4,
    batch_size: int = 128,
    schedule: str = "constant",
    seed: int | None = None,
    key: ReleaseKey | None = None,
    progress: bool = True,
    release_id: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    block_rows: int = 1024,
    workers: int = 2,
    train_workers: int = 1,
    train_storage: str | os.PathLike | None = None,
    address: str | None = None,
) -> RayLDPKiTResult:
    """:func:`noiseforge.ldp.ldpkit` as a Ray job (same arguments, same results with ``seed``).

    ``x``: the private inputs, an (N, ...) array or tensor, or a Ray Dataset with
    columns ``record`` and ``x`` (:func:`read_private` reads Parquet; ``records``
    is then ignored, and results come in record-id order). ``block_rows``: rows per
    released block (one ledger entry each) and per cloud request; ``workers``: the
    size of the cloud-client and inference actor pools; ``address``: the Ray
    cluster (:func:`noiseforge.distributed.connect`). ``ledger`` must be one that
    workers can open (an SQLite file or a PostgreSQL URL, not in-memory).

    Training: ``train_workers=1`` trains the local model in one Ray task (bit for
    bit the local engine's); more trains it with Ray Train in that many processes,
    data parallel (:func:`noiseforge.distributed.train.train_ray`: the same steps,
    equal to one process up to float rounding), with its run kept in
    ``train_storage`` (default a temporary folder; on several machines, storage
    every node mounts).

    Resuming: ``checkpoint`` is a folder (created if missing; on a cluster, storage
    that every node sees) where each block's cloud answers are kept after every
    request, bound to the digest of what was asked. A job that stopped (the cloud
    failed, the driver died) and is run again with the same ``release_id`` and
    ``seed`` -- or, for a secret release, the same ``release_id`` and ``key`` (a
    :class:`~noiseforge.random.ReleaseKey`; it pickles, keep it as private as the
    data) -- and the same ``block_rows`` replays every charge (nothing is charged
    twice), draws the same noise, copies and pairs, and asks the cloud only for the
    answers not yet kept. Without the same key a secret release cannot be resumed:
    the ledger refuses its id under another key (IdempotencyConflictError or
    ReleaseConflictError, whichever block comes first), and no noise is drawn. A
    seeded resume runs in a new process (the seeded streams of a process continue
    from call to call, as for the local engine). Blocks are charged one by one: a
    block refused for budget stops the job, and the blocks charged before it stay
    charged (their answers kept in the checkpoint), as for separate releases.
    """
    if targets not in ("answers", "aggregated"):
        raise ValueError(f"targets must be 'answers' or 'aggregated', got {targets!r}")
    noise_copies = check_int("noise_copies", noise_copies, 0)
    if not (isinstance(superimposed, int | float) and math.isfinite(superimposed)):
        raise ValueError(f"superimposed must be a number >= 0, got {superimposed!r}")
    if superimposed < 0:
        raise ValueError("noise_copies and superimposed must be >= 0")
    if not (isinstance(weight, int | float) and 0.0 <= weight <= 1.0):
        raise ValueError(f"weight must be in [0, 1] (a convex mix of two rows), got {weight!r}")
    _check_resumable(checkpoint, seed, key, release_id)
    train_workers = check_int("train_workers", train_workers, 1)
    connect(address)
    ray = require_ray()
    _data_context(progress)
    if isinstance(x, ray.data.Dataset):  # rows read by Ray Data (see read_private)
        xt = _positioned(x).materialize()
        n = xt.count()
        first = xt.take(1)
        features = math.prod(np.shape(first[0][X])) if first else 0
    else:
        xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        n = xt.shape[0]
        features = math.prod(xt.shape[1:])
    spec = _CloudSpec.of(cloud)
    asking = _asking(checkpoint, block_rows)
    released, release_id, key = ray_release(
        xt, records, ledger, noise, release_id=release_id, seed=seed, key=key, batch_size=block_rows
    )
    released = released.materialize()  # charged once here; the later stages read it
    s = None if seed is None else seed + 1
    copy_stream = None
    if noise_copies and s is not None:  # the counters the local engine's one call uses
        per_input = counters_per_input(noise.mechanism.name, noise_copies, features)
        copy_stream = seeded_generator(s).reserve(n * per_input)
    answered = released.map_batches(
        CloudQuery,
        batch_size=None,
        batch_format="numpy",
        fn_constructor_kwargs=dict(
            cloud=spec,
            ledger=ledger,
            noise=noise,
            copies=noise_copies,
            copy_stream=copy_stream,
            key=key,
            asking=asking,
        ),
        compute=_pool(workers, _blocks(xt, block_rows)),
        num_cpus=ACTOR_CPUS,
    )
    keys = ["positions", "records", "data", "answers", "copy_data", "copy_answers", "aggregated"]
    cols = _sorted_stage(answered, keys)
    del answered
    gc.collect()  # the query actors' CPUs, for the next stages
    order = np.argsort(np.concatenate(cols["positions"]), kind="stable")
    blocks = len(cols["positions"])

    def ordered(key: str, per_row: int = 1) -> torch.Tensor:
        whole = np.concatenate(cols[key])
        if per_row == 1:
            return torch.from_numpy(whole[order])
        rows = (order[:, None] * per_row + np.arange(per_row)).reshape(-1)
        return torch.from_numpy(whole[rows])

    data, answers, aggregated = ordered("data"), ordered("answers"), ordered("aggregated")
    rec = ordered("records")
    parts_x, parts_y = [data], [answers]
    if noise_copies:
        # a block's copies are grouped by source row, so its rows' copies stay adjacent
        parts_x.append(ordered("copy_data", noise_copies))
        parts_y.append(ordered("copy_answers", noise_copies))
    pairs = round(superimposed * n)
    if pairs:
        if n < 2:
            raise ValueError("superimposition needs at least two released rows")
        gen = torch.Generator().manual_seed(s if s is not None else _pairs_seed(key, release_id))
        a = torch.randint(0, n, (pairs,), generator=gen)
        b = (a + torch.randint(1, max(2, n), (pairs,), generator=gen)) % n
        pair_ds = _columns_dataset(
            {"pair": np.arange(pairs, dtype=np.int64), "a": a.numpy(), "b": b.numpy()},
            block_rows,
        )
        mixed = pair_ds.map_batches(
            MixedQuery,
            batch_size=block_rows,
            batch_format="numpy",
            fn_constructor_kwargs=dict(
                cloud=spec,
                ledger=ledger,
                noise=noise,
                released=[released.to_arrow_refs()],
                weight=weight,
                asking=asking,
            ),
            compute=_pool(workers, -(-pairs // block_rows)),
            num_cpus=ACTOR_CPUS,
        )
        mcols: dict[str, list[np.ndarray]] = {"pair": [], "data": [], "answers": []}
        for batch in mixed.iter_batches(batch_size=None, batch_format="numpy"):
            for k in mcols:
                mcols[k].append(batch[k])
        del mixed
        gc.collect()
        morder = np.argsort(np.concatenate(mcols["pair"]), kind="stable")
        parts_x.append(torch.from_numpy(np.concatenate(mcols["data"])[morder]))
        parts_y.append(torch.from_numpy(np.concatenate(mcols["answers"])[morder]))
    queries_x, train_targets = torch.cat(parts_x), torch.cat(parts_y)
    if targets == "aggregated":
        own = n * (1 + noise_copies)
        index = torch.cat([torch.arange(n), torch.arange(n).repeat_interleave(noise_copies)])
        train_targets[:own] = aggregated[index]
    fit = dict(epochs=epochs, batch_size=batch_size, schedule=schedule, seed=seed or 0)
    if train_workers == 1:
        train = ray.remote(num_cpus=1)(_train)
        local = ray.get(
            train.remote(
                make_local_model(),
                queries_x.numpy(),
                train_targets.numpy(),
                dict(fit, progress=False, desc="local model"),
            )
        )
    else:
        from noiseforge.distributed.train import train_ray

        local = train_ray(
            make_local_model(),
            queries_x.numpy(),
            train_targets.numpy(),
            workers=train_workers,
            storage_path=train_storage,
            address=address,
            **fit,
        )
    model_ref = ray.put(local)
    source = xt if isinstance(xt, ray.data.Dataset) else private_dataset(xt, block_rows=block_rows)
    predicted = source.map_batches(
        _Predict,
        batch_size=None,
        batch_format="numpy",
        fn_constructor_kwargs=dict(model=[model_ref]),
        compute=_pool(workers, _blocks(xt, block_rows)),
        num_cpus=ACTOR_CPUS,
    )
    labels = torch.empty(n, dtype=torch.int64)
    for batch in predicted.iter_batches(batch_size=None, batch_format="numpy"):
        labels[torch.from_numpy(np.array(batch[POSITION]))] = torch.from_numpy(
            np.array(batch["label"])
        )
    return RayLDPKiTResult(
        predictions=labels,
        aggregated=aggregated,
        local_model=local,
        queries=int(queries_x.shape[0]),
        release_id=release_id,
        records=rec,
        blocks=blocks,
    )
