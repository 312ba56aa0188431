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
   per actor): each packed block is first checked against the ledger
   (:func:`verified_rows`: the entry of its release id and batch exists and
   its output digest -- bound by ``release`` before the rows were returned --
   equals the digest of the rows as they arrived); a block that fails is
   refused with ReleaseIntegrityError and nothing of it is sent. Only then are
   the layer-2 noise copies drawn (post-processing, free) and the rows asked
   of the cloud, with the answer checks and retries of
   :func:`noiseforge.ldp.query_cloud`. A record's rows (its release and its
   copies) never span blocks, so its answers are aggregated
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
So ``ldpkit_ray(..., seed=s)`` equals ``ldpkit(..., seed=s)`` bit for bit (the
labels and the aggregated answers), whatever the blocks and workers.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import itertools
import math
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from noiseforge.distributed.runtime import (
    ACTOR_CPUS,
    TASK_CPUS,
    configure_threads,
    connect,
    require_ray,
)
from noiseforge.ldp.cloud import (
    CloudAnswerError,
    CloudModel,
    CloudQueryError,
    CloudRequestError,
    check_answers,
)
from noiseforge.ldp.http import HTTPCloud
from noiseforge.ldp.ledger import PrivacyLedger, RecordSet
from noiseforge.ldp.models import predict_labels, train_classifier
from noiseforge.ldp.release import release
from noiseforge.ldp.seal import ReleaseIntegrityError, seal
from noiseforge.ops import ldp_noise, soft_label_sum
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
    "release_block",
    "standard_ldp_ray",
    "verified_rows",
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
    ids = records.numpy() if isinstance(records, torch.Tensor) else np.asarray(records)
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
        data = private_dataset(data, records, block_rows=batch_size)
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
class _Entries:
    """The ledger entries of one release, read once and re-read when a block is new."""

    def __init__(self, ledger: PrivacyLedger) -> None:
        self.ledger = ledger
        self.known: dict[tuple[str, str], Any] = {}

    def get(self, release_id: str, batch: str) -> Any:
        k = (release_id, batch)
        if k not in self.known:
            for e in self.ledger.entries(release_id):
                self.known[(e.release_id, e.batch)] = e
        return self.known.get(k)


def verified_rows(
    row: dict[str, Any], entries: _Entries
) -> tuple[str, str, torch.Tensor, torch.Tensor, np.ndarray]:
    """``(release_id, batch, data, records, positions)`` of a packed block, as fresh
    tensors checked against the ledger: the entry ``(release_id, batch)`` exists,
    holds exactly these records, and its bound output digest is the digest of these
    rows. Raises ReleaseIntegrityError otherwise (nothing of the block is sent)."""
    rid, name = str(row["release_id"]), str(row["batch"])
    data = torch.from_numpy(np.array(row["data"], copy=True))
    records = torch.from_numpy(np.array(row["records"], dtype=np.int64, copy=True)).reshape(-1)
    positions = np.array(row["positions"], dtype=np.int64, copy=True).reshape(-1)
    entry = entries.get(rid, name)
    where = f"block {name!r} of release {rid!r}"
    if entry is None or entry.output_digest is None:
        raise ReleaseIntegrityError(
            f"{where} was never released (no ledger entry binds its rows); refusing to send "
            "it: only rows released by noiseforge.ldp.release() may leave the client"
        )
    try:
        same_records = np.array_equal(
            RecordSet.from_ids(records.numpy()).ranges, entry.records.ranges
        )
    except (TypeError, ValueError):
        same_records = False
    if not same_records or seal(data, records, f"{rid}\0{name}").digest != entry.output_digest:
        raise ReleaseIntegrityError(
            f"{where}: its rows are not the rows the ledger says were released (changed, or "
            "from elsewhere); refusing to send them"
        )
    return rid, name, data, records, positions


# ----------------------------------------------------------------------------- the cloud
@dataclass(frozen=True)
class _CloudSpec:
    """How an actor gets its cloud client: an HTTP URL, or a pickled model."""

    url: str | None = None
    timeout: float = 60.0
    model: CloudModel | None = None

    @classmethod
    def of(cls, cloud: CloudModel) -> _CloudSpec:
        if not isinstance(cloud, CloudModel):
            raise TypeError(
                f"cloud must be a noiseforge.ldp.CloudModel, got {type(cloud).__name__}"
            )
        if isinstance(cloud, HTTPCloud):
            return cls(url=cloud.url, timeout=cloud.timeout)
        return cls(model=cloud)

    def open(self) -> CloudModel:
        return HTTPCloud(self.url, timeout=self.timeout) if self.url else self.model


class _Asker:
    """The cloud of one actor, asked in batches with query_cloud's checks and retries."""

    def __init__(
        self,
        cloud: _CloudSpec,
        ledger: PrivacyLedger,
        batch_size: int,
        retries: int,
        backoff: float,
    ) -> None:
        self.cloud = cloud.open()
        self.entries = _Entries(ledger)
        self.batch_size, self.retries, self.backoff = batch_size, retries, backoff
        self.classes: int | None = None

    def ask(self, data: torch.Tensor) -> torch.Tensor:
        """(M, C) checked answers for the verified rows ``data``."""
        parts = []
        for s in range(0, data.shape[0], self.batch_size):
            part = data[s : s + self.batch_size]
            answer = self._ask_once(part, s)
            self.classes = answer.shape[1]
            parts.append(answer)
        return torch.cat(parts) if parts else torch.zeros((0, self.classes or 0))

    def _ask_once(self, part: torch.Tensor, first: int) -> torch.Tensor:
        rows = f"rows {first}..{first + part.shape[0] - 1}"
        for attempt in range(self.retries + 1):
            try:
                return check_answers(self.cloud._predict(part.clone()), part.shape[0], self.classes)
            except CloudRequestError as exc:
                raise CloudQueryError(f"the cloud refused {rows} ({exc})") from exc
            except (OSError, RuntimeError, TimeoutError) as exc:
                if attempt == self.retries:
                    kind = (
                        CloudAnswerError if isinstance(exc, CloudAnswerError) else CloudQueryError
                    )
                    raise kind(
                        f"the cloud failed {self.retries + 1} times on {rows} ({exc})"
                    ) from exc
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")


def _rows_of(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    n = len(batch["batch"])
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


class CloudQuery:
    """Actor of the expand + query stage: verify each packed block against the ledger,
    draw its noise copies, ask the cloud, aggregate per record.

    ``copy_stream``: ``(seed, first_counter)`` of seeded copies (the local engine's
    counters, reserved on the driver), or None for secret copies. Emits one packed
    row per block: ``positions``, ``records``, ``data`` and ``answers`` of the
    released rows, ``copy_data`` / ``copy_answers`` (row i's copies adjacent) and
    ``aggregated`` (the mean answer over each record's rows).
    """

    def __init__(
        self,
        cloud: _CloudSpec,
        ledger: PrivacyLedger,
        noise: NoiseSpec,
        copies: int = 0,
        copy_stream: tuple[int, int] | None = None,
        batch_size: int = 1024,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.asker = _Asker(cloud, ledger, batch_size, retries, backoff)
        self.noise, self.copies, self.copy_stream = noise, copies, copy_stream

    def _noise_copies(self, data: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
        k = self.copies
        feature = data.shape[1:]
        if self.copy_stream is None:
            y = ldp_noise(data, self.noise, copies=k)
            return y.reshape(data.shape[0] * k, *feature)
        seed, first = self.copy_stream
        d = math.prod(feature)
        out = []
        starts = np.flatnonzero(np.diff(positions, prepend=positions[:1] - 2) != 1)
        bounds = [*starts.tolist(), len(positions)]
        for s, e in itertools.pairwise(bounds):
            offset = first + int(positions[s]) * k * d
            y = ldp_noise(data[s:e], self.noise, copies=k, seed=seed, offset=offset)
            out.append(y.reshape((e - s) * k, *feature))
        return torch.cat(out)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        configure_threads()
        outs = []
        for row in _rows_of(batch):
            _, _, data, records, positions = verified_rows(row, self.asker.entries)
            m = data.shape[0]
            copies = self._noise_copies(data, positions) if self.copies else data[:0]
            answers = self.asker.ask(torch.cat([data, copies]))
            index = torch.cat([torch.arange(m), torch.arange(m).repeat_interleave(self.copies)])
            aggregated = soft_label_sum(index, answers, m, mean=True)
            outs.append(
                {
                    "positions": positions,
                    "records": records.numpy(),
                    "data": data.numpy(),
                    "answers": answers[:m].numpy(),
                    "copy_data": copies.numpy(),
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
    (packed rows); each block is checked against the ledger before its rows are used.
    Input rows: ``pair`` (index), ``a`` and ``b`` (positions); emits ``pair``,
    ``data`` (the mixed rows) and ``answers``.
    """

    def __init__(
        self,
        cloud: _CloudSpec,
        ledger: PrivacyLedger,
        released: list,
        weight: float,
        batch_size: int = 1024,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.asker = _Asker(cloud, ledger, batch_size, retries, backoff)
        self.refs, self.weight = released[0], weight
        self.table: torch.Tensor | None = None

    def _released(self) -> torch.Tensor:
        if self.table is None:
            import ray
            from ray.data.block import BlockAccessor

            pieces: list[tuple[np.ndarray, torch.Tensor]] = []
            for block in ray.get(list(self.refs)):
                batch = BlockAccessor.for_block(block).to_batch_format("numpy")
                for row in _rows_of(batch):
                    _, _, data, _, positions = verified_rows(row, self.asker.entries)
                    pieces.append((positions, data))
            n = 1 + max(int(p.max()) for p, _ in pieces)
            first = pieces[0][1]
            table = torch.empty((n, *first.shape[1:]), dtype=first.dtype)
            for p, d in pieces:
                table[torch.from_numpy(p)] = d
            self.table = table
        return self.table

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        configure_threads()
        table = self._released()
        a = torch.from_numpy(np.asarray(batch["a"], dtype=np.int64))
        b = torch.from_numpy(np.asarray(batch["b"], dtype=np.int64))
        w = self.weight
        data = table.float()
        mixed = (w * data[a] + (1.0 - w) * data[b]).to(table.dtype)
        answers = self.asker.ask(mixed)
        return {
            "pair": np.asarray(batch["pair"]),
            "data": mixed.numpy(),
            "answers": answers.numpy(),
        }


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
    if progress is not None:
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = progress


@_frees_actors
def standard_ldp_ray(
    x: Any,
    records: Any,
    cloud: CloudModel,
    ledger: PrivacyLedger,
    noise: NoiseSpec,
    *,
    seed: int | None = None,
    batch_size: int = 1024,
    progress: bool = True,
    release_id: str | None = None,
    workers: int = 2,
    address: str | None = None,
) -> torch.Tensor:
    """:func:`noiseforge.ldp.standard_ldp` on Ray: release, ask the cloud, the top answer.

    ``batch_size`` rows per released block and per cloud request; ``workers``
    cloud clients; ``address`` the Ray cluster (see
    :func:`noiseforge.distributed.connect`). Returns (N,) labels in the inputs' order.
    """
    connect(address)
    _data_context(progress)
    released, _, _ = ray_release(
        x, records, ledger, noise, release_id=release_id, seed=seed, batch_size=batch_size
    )
    answered = released.map_batches(
        CloudQuery,
        batch_size=None,
        batch_format="numpy",
        fn_constructor_kwargs=dict(
            cloud=_CloudSpec.of(cloud), ledger=ledger, noise=noise, batch_size=batch_size
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
    progress: bool = True,
    release_id: str | None = None,
    block_rows: int = 1024,
    workers: int = 2,
    address: str | None = None,
) -> RayLDPKiTResult:
    """:func:`noiseforge.ldp.ldpkit` as a Ray job (same arguments, same results with ``seed``).

    ``x``: the private inputs, an (N, ...) array or tensor. ``block_rows``: rows per
    released block (one ledger entry each) and per cloud request; ``workers``: the
    size of the cloud-client and inference actor pools; ``address``: the Ray
    cluster (:func:`noiseforge.distributed.connect`). ``ledger`` must be one that
    workers can open (an SQLite file or a PostgreSQL URL, not in-memory).
    """
    if targets not in ("answers", "aggregated"):
        raise ValueError(f"targets must be 'answers' or 'aggregated', got {targets!r}")
    if noise_copies < 0 or superimposed < 0:
        raise ValueError("noise_copies and superimposed must be >= 0")
    connect(address)
    ray = require_ray()
    _data_context(progress)
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    n = xt.shape[0]
    features = math.prod(xt.shape[1:])
    spec = _CloudSpec.of(cloud)
    released, release_id, _ = ray_release(
        xt, records, ledger, noise, release_id=release_id, seed=seed, batch_size=block_rows
    )
    released = released.materialize()  # charged once here; the later stages read it
    s = None if seed is None else seed + 1
    copy_stream = None
    if noise_copies and s is not None:  # the counters the local engine's one call uses
        copy_stream = seeded_generator(s).reserve(n * noise_copies * features)
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
            batch_size=block_rows,
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
        gen = torch.Generator().manual_seed(s) if s is not None else None
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
                released=[released.to_arrow_refs()],
                weight=weight,
                batch_size=block_rows,
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
    train = ray.remote(num_cpus=1)(_train)
    local = ray.get(
        train.remote(
            make_local_model(),
            queries_x.numpy(),
            train_targets.numpy(),
            dict(
                epochs=epochs,
                batch_size=batch_size,
                schedule=schedule,
                seed=0 if seed is None else seed,
                progress=False,
                desc="local model",
            ),
        )
    )
    model_ref = ray.put(local)
    predicted = private_dataset(xt, block_rows=block_rows).map_batches(
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
