"""Semantic-negative mining on Ray: sharded HNSW indexes, fanned-out search, the local pick.

:func:`mine_semantic_negatives_ray` is
:func:`noiseforge.relevance.mining.mine_semantic_negatives` with its embedding and
search stages on Ray; the preparation (query families, computed once on the
driver; per task the targets, exclusion lists and how many to mine) and the final
pick (rank window, ratio test, seeded round-robin choice, ids) are the local
engine's own code (:func:`~noiseforge.relevance.mining.prepare_mining`,
:func:`~noiseforge.relevance.mining.pick_negatives`).

Per task:

1. **Embed** -- every task's targets and queries in one
   :func:`~noiseforge.distributed.embed.embed_ray` job (an actor pool holding the
   encoder, the local engine's embedding cache).
2. **Shard** -- each distinct target goes to shard ``blake2b(target) mod shards``
   (a stable hash: the same shard on every machine and run, unlike ``hash()``).
3. **Build** -- one Ray task per shard builds its :class:`HNSWIndex` with one
   thread and the local engine's ``M``, ``ef_construction`` and ``seed``, and
   saves it to ``shard_dir``. Indexes never travel through the object store (a
   pickled 50k x 384 index is 84 MB per copy); search actors load them from the
   files. ``shard_dir`` must therefore be on storage every node sees.
4. **Search** -- ``workers`` search actors; each block of queries is searched in
   every shard, with each query's exclusion list mapped to the shard's local ids,
   for ``min(k, shard size)`` neighbours with the local beam ``ef = max(128, 4k)``
   (``k = min(hi, targets)``).
5. **Merge** -- per query the shards' results by score, ties by the global target
   id (the order of one index's results), the first ``k`` kept
   (:func:`merge_topk`); then the local pick.

Equivalence: with ``shards=1`` the index is the local engine's (the same vectors
in the same order, the same parameters, saved and loaded unchanged) and so is the
search: the result equals ``mine_semantic_negatives`` bit for bit. With
``shards > 1`` each shard is a different (smaller) graph: where the search is
exact -- the beam covers each index (``max(128, 4k) >=`` the task's targets) --
the merged top-k is the exact top-k and the result again equals the local
engine's; on larger tasks both are approximate and may differ in the candidates
the graphs miss, with the same guarantees (no known target of a query's family is
ever mined; every mined target is within the rank window of what was searched and
passes the ratio test).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noiseforge._common.paths import default_cache_dir
from noiseforge._progress import progress_bar
from noiseforge.distributed.embed import EncoderSpec, embed_ray
from noiseforge.distributed.runtime import (
    ACTOR_CPUS,
    TASK_CPUS,
    configure_threads,
    connect,
    gather,
    require_ray,
)
from noiseforge.index import HNSWIndex
from noiseforge.relevance.embed import USEEncoder
from noiseforge.relevance.mining import (
    MiningTask,
    append_mined,
    check_mining_args,
    embed_task,
    mined_frame,
    pick_negatives,
    prepare_mining,
    search_ef,
)

__all__ = [
    "ShardSearcher",
    "add_semantic_negatives_ray",
    "build_shard",
    "merge_topk",
    "mine_semantic_negatives_ray",
    "shard_of",
]

#: queries per search request (one request per block of queries and shard)
QUERY_BLOCK = 4096


def shard_of(texts: Any, shards: int) -> np.ndarray:
    """(n,) int64 shard of each text: the first 8 bytes of its BLAKE2b digest (UTF-8,
    little-endian) modulo ``shards`` -- the same on every machine and in every run."""
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(str(t).encode("utf-8"), digest_size=8).digest(), "little"
            )
            % shards
            for t in texts
        ),
        dtype=np.int64,
        count=len(texts),
    )


def build_shard(vectors: np.ndarray, path: str, M: int, ef_construction: int, seed: int) -> str:
    """The body of one build task: a cosine :class:`HNSWIndex` of ``vectors`` (ids
    0..n-1, one thread, so the graph is the local engine's for the same vectors)
    saved to ``path``; returns ``path``."""
    configure_threads()
    index = HNSWIndex(vectors.shape[1], "cosine", M=M, ef_construction=ef_construction, seed=seed)
    index.add(vectors, num_threads=1)
    index.save(path)
    return path


class ShardSearcher:
    """A search actor: loads shard indexes from their files (keeping the ``capacity``
    most recently used) and searches blocks of queries in them."""

    def __init__(self, capacity: int) -> None:
        configure_threads()
        self.capacity = max(1, int(capacity))
        self._indexes: OrderedDict[str, HNSWIndex] = OrderedDict()

    def _index(self, path: str) -> HNSWIndex:
        index = self._indexes.pop(path, None)
        if index is None:
            index = HNSWIndex.load(path)
            while len(self._indexes) >= self.capacity:
                self._indexes.popitem(last=False)
        self._indexes[path] = index
        return index

    def search(
        self,
        path: str,
        queries: np.ndarray,
        k: int,
        offsets: np.ndarray,
        excluded: np.ndarray,
        ef: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``HNSWIndex.search`` of the index at ``path``, exclusions as CSR (shard-local ids)."""
        configure_threads()
        return self._index(path).search(queries, k, exclude=(offsets, excluded), ef=ef)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of several shards' results for the same queries.

    ``parts``: per shard ``(ids (nq, k_s) int64 global ids, -1 padding; scores
    (nq, k_s) float32)``. Entries are ordered by score (higher first), ties by lower
    id -- the order of one index's results -- and padding last. Returns ``(ids (nq,
    k), scores (nq, k))`` with ``-1``/NaN where fewer than ``k`` results exist.
    """
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1).astype(np.float32)
    valid = ids >= 0
    by_score = np.where(valid, -scores.astype(np.float64), np.inf)
    by_id = np.where(valid, ids, np.iinfo(np.int64).max)
    order = np.lexsort((by_id, by_score), axis=-1)[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_scores = np.take_along_axis(scores, order, axis=1)
    short = np.take_along_axis(valid, order, axis=1)
    out_ids[~short] = -1
    out_scores[~short] = np.nan
    if out_ids.shape[1] < k:  # fewer results than k in all shards together
        pad = k - out_ids.shape[1]
        out_ids = np.pad(out_ids, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=np.nan)
    return out_ids, out_scores


def _shard_csr(
    exclude: list[np.ndarray], shard: np.ndarray, local: np.ndarray, s: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(offsets (nq+1,), ids)`` of each query's excluded targets in shard ``s``,
    as shard-local ids."""
    nq = len(exclude)
    flat = np.concatenate(exclude) if nq else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(nq), [len(e) for e in exclude])
    inside = shard[flat] == s
    offsets = np.zeros(nq + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(owner[inside], minlength=nq))
    return offsets, np.ascontiguousarray(local[flat[inside]], dtype=np.int64)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _safe(name: str) -> str:
    """``name`` usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[:64]


class _TaskSearch:
    """The submitted build and search work of one task: the shards' members and the
    pending search results, block by block."""

    def __init__(self, members: list[np.ndarray], refs: list[list[tuple[int, Any]]]) -> None:
        self.members = members  # per shard: its targets' global ids, ascending
        self.refs = refs  # per query block: (shard, ObjectRef of (ids, scores))


def _submit(
    ray: Any,
    task: MiningTask,
    number: int,
    qvec: np.ndarray,
    tvec: np.ndarray,
    *,
    shards: int,
    folder: Path,
    build: Any,
    actors: list,
    M: int,
    ef_construction: int,
    seed: int,
) -> _TaskSearch:
    """Shard the task's targets, submit one build per non-empty shard and one search per
    (query block, shard); nothing waits here (Ray runs a search once its index exists)."""
    shard = shard_of(task.targets, shards)
    local = np.empty(len(shard), dtype=np.int64)
    members, paths = [], []
    for s in range(shards):
        ids = np.flatnonzero(shard == s)
        local[ids] = np.arange(len(ids))
        members.append(ids)
        if len(ids) == 0:
            paths.append(None)
            continue
        path = folder / f"{number:04d}-{_safe(task.task)}.shard{s}of{shards}.hnsw"
        vec_ref = ray.put(np.ascontiguousarray(tvec[ids]))
        paths.append(build.remote(vec_ref, str(path), M, ef_construction, seed))
    csr = [_shard_csr(task.exclude, shard, local, s) for s in range(shards)]
    ef = search_ef(task.k)
    refs: list[list[tuple[int, Any]]] = []
    for b, start in enumerate(range(0, len(qvec), QUERY_BLOCK)):
        stop = min(start + QUERY_BLOCK, len(qvec))
        q_ref = ray.put(np.ascontiguousarray(qvec[start:stop]))
        block = []
        for s in range(shards):
            if paths[s] is None:
                continue
            offsets, excluded = csr[s]
            lo, hi = offsets[start], offsets[stop]
            actor = actors[(s + shards * b) % len(actors)]  # a shard's blocks stay together
            block.append(
                (
                    s,
                    actor.search.remote(
                        paths[s],
                        q_ref,
                        min(task.k, len(members[s])),
                        offsets[start : stop + 1] - lo,
                        excluded[lo:hi],
                        ef,
                    ),
                )
            )
        refs.append(block)
    return _TaskSearch(members, refs)


def _collect(ray: Any, task: MiningTask, pending: _TaskSearch) -> tuple[np.ndarray, np.ndarray]:
    """The task's merged ``(ids, scores)`` in global target ids, blocks in query order."""
    ids_out, scores_out = [], []
    for block in pending.refs:
        results = gather(ray, [ref for _, ref in block])
        parts = []
        for (s, _), (ids, scores) in zip(block, results, strict=True):
            members = pending.members[s]
            parts.append((np.where(ids >= 0, members[np.maximum(ids, 0)], -1), scores))
        if len(parts) == 1:  # one shard: its own order (and its -1/NaN padding) as is
            ids, scores = parts[0]
        else:
            ids, scores = merge_topk(parts, task.k)
        ids_out.append(ids)
        scores_out.append(scores)
    return np.concatenate(ids_out), np.concatenate(scores_out)


def mine_semantic_negatives_ray(
    df: pd.DataFrame,
    encoder: EncoderSpec | None = None,
    *,
    shards: int = 2,
    workers: int = 2,
    shard_dir: str | os.PathLike | None = None,
    address: str | None = None,
    rank_window: tuple[int, int] = (3, 30),
    ratio: float = 0.95,
    positive_share: float | None = 0.5,
    n_negatives: int | None = None,
    max_per_row: int = 1,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    M: int = 16,
    ef_construction: int = 200,
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`~noiseforge.relevance.mining.mine_semantic_negatives` on Ray (the same
    mining arguments; the rows of the local engine, see the module's equivalence).

    Parameters
    ----------
    encoder: an encoder that pickles, or a zero-argument factory of one (default:
        the class ``USEEncoder``, built in each embedding actor); see
        :func:`~noiseforge.distributed.embed.embed_ray`.
    shards: target shards per task (one HNSW index each), >= 1.
    workers: embedding actors and search actors, >= 1.
    shard_dir: where the shard indexes are saved and loaded from. Default: a
        temporary folder on this machine, deleted when the job ends -- right for a
        local Ray instance only. **On a cluster of several nodes give a folder on
        shared storage** (NFS, a mounted bucket) that every node reads and writes;
        without one the job refuses to start. A given folder is kept: each job
        writes into its own ``job-<id>`` subfolder of it.
    address: the Ray cluster (:func:`noiseforge.distributed.connect`).
    cache_dir: the embedding cache, as for the local engine (default
        ``default_cache_dir()/embeddings``); the embedding actors read and append
        to it, so on a cluster it should be shared storage too.

    Returns
    -------
    DataFrame of the new rows (the schema's columns), as the local engine.

    Raises
    ------
    ValueError
        Bad mining arguments, ``shards`` or ``workers`` below 1, or a multi-node
        cluster without ``shard_dir``.
    """
    check_mining_args(rank_window, ratio)
    shards = _check_count("shards", shards)
    workers = _check_count("workers", workers)
    if encoder is None:
        encoder = USEEncoder
    plan = prepare_mining(
        df, rank_window=rank_window, positive_share=positive_share, n_negatives=n_negatives
    )
    if not plan.tasks:
        return mined_frame([])
    connect(address)
    ray = require_ray()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if shard_dir is None and len(nodes) > 1:
        raise ValueError(
            f"the Ray cluster has {len(nodes)} nodes: pass shard_dir, a folder on storage "
            "every node shares (NFS, a mounted bucket), for the shard indexes; the default "
            "temporary folder exists on this machine only"
        )
    texts: list[str] = []
    for task in plan.tasks:
        texts += list(task.targets) + task.queries
    vectors = embed_ray(
        texts,
        encoder,
        workers=workers,
        cache_dir=default_cache_dir() / "embeddings" if cache_dir is None else cache_dir,
        address=address,
    )
    row_of = {t: i for i, t in reversed(list(enumerate(texts)))}  # a text's first row

    def looked_up(batch: list[str]) -> np.ndarray:
        return vectors[[row_of[t] for t in batch]]

    embedded = [embed_task(task, looked_up) for task in plan.tasks]

    temporary = shard_dir is None
    if temporary:
        folder = Path(tempfile.mkdtemp(prefix="noiseforge-shards-"))
    else:  # one folder per job: two jobs sharing shard_dir never overwrite each other
        folder = Path(shard_dir) / f"job-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
    build = ray.remote(num_cpus=TASK_CPUS)(build_shard)
    searcher = ray.remote(num_cpus=ACTOR_CPUS)(ShardSearcher)
    actors = [searcher.remote(capacity=shards) for _ in range(workers)]
    try:
        pending = [
            _submit(
                ray,
                task,
                i,
                qvec,
                tvec,
                shards=shards,
                folder=folder,
                build=build,
                actors=actors,
                M=M,
                ef_construction=ef_construction,
                seed=seed,
            )
            for i, (task, (qvec, tvec)) in enumerate(zip(plan.tasks, embedded, strict=True))
        ]
        rng = np.random.default_rng(seed)  # one generator over the tasks, as locally
        out: list[dict] = []
        bar = progress_bar(
            total=sum(len(t.queries) for t in plan.tasks),
            desc=f"mining ({shards} shards)",
            enabled=progress,
            unit="queries",
        )
        try:
            for task, (qvec, tvec), work in zip(plan.tasks, embedded, pending, strict=True):
                ids, scores = _collect(ray, task, work)
                out += pick_negatives(
                    plan,
                    task,
                    qvec,
                    tvec,
                    ids,
                    scores,
                    rank_window=rank_window,
                    ratio=ratio,
                    max_per_row=max_per_row,
                    rng=rng,
                )
                bar.update(len(task.queries))
        finally:
            bar.close()
    finally:
        for actor in actors:
            ray.kill(actor)
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    return mined_frame(out)


def add_semantic_negatives_ray(
    df: pd.DataFrame, encoder: EncoderSpec | None = None, **kwargs: Any
) -> pd.DataFrame:
    """``df`` with :func:`mine_semantic_negatives_ray` rows appended (missing provenance
    columns of ``df`` filled as for original rows), as
    :func:`~noiseforge.relevance.mining.add_semantic_negatives`."""
    return append_mined(df, mine_semantic_negatives_ray(df, encoder, **kwargs))
