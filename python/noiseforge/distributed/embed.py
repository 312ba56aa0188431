"""Embeddings on Ray: distinct texts -> an actor pool holding the encoder -> vectors.

:func:`embed_ray` is :func:`noiseforge.relevance.embed.embed_cached` as a Ray Data
job: the distinct texts (each encoded once) in blocks of ``block_rows``, mapped by
a pool of ``workers`` actors (:data:`~noiseforge.distributed.runtime.ACTOR_CPUS`
each), each holding one encoder built once when the actor starts, and the vectors
joined back in the input order. With ``out`` the distinct (text, vector) pairs are
also written as one Parquet file.

With ``cache_dir`` the actors use the embedding cache of ``embed_cached``
(:mod:`noiseforge._common.embedding_cache`): a text already there is not encoded
again, and each block's new vectors are appended as one shard (the cache takes
concurrent writers). On a cluster the cache folder must be on storage every node
shares.

An encoder is deterministic per text for the result to equal ``encoder.encode`` of
the same texts whatever the blocks (true of :class:`HashingEncoder` and the USE
model; a model that pads a batch to its longest text may differ in the last bits).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noiseforge._common.embedding_cache import (
    TextEncoder,
    encoder_dir,
    load_shards,
    text_key,
    write_shard,
)
from noiseforge._common.files import atomic_write
from noiseforge.distributed.runtime import ACTOR_CPUS, configure_threads, connect, require_ray

__all__ = ["EncodeActor", "embed_ray", "write_embeddings"]

#: an encoder, or a zero-argument callable (a class, a function) that builds one
EncoderSpec = TextEncoder | Callable[[], TextEncoder]


def _is_factory(spec: Any) -> bool:
    """A class (``USEEncoder``) or a callable without ``encode`` builds the encoder."""
    return isinstance(spec, type) or (callable(spec) and not hasattr(spec, "encode"))


def _build(spec: Any) -> TextEncoder:
    """The encoder of ``spec`` (built when it is a factory), checked for name/dim/encode."""
    encoder = spec() if _is_factory(spec) else spec
    for attr in ("name", "dim", "encode"):
        if not hasattr(encoder, attr):
            raise TypeError(
                f"embed_ray needs an encoder with name, dim and encode(texts) (or a "
                f"zero-argument factory of one); {type(encoder).__name__} has no {attr!r}"
            )
    return encoder


def _checked(encoder: TextEncoder, vec: Any, n: int) -> np.ndarray:
    """``encoder.encode`` output as (n, dim) float32, refusing a wrong shape or NaN/inf."""
    dim = int(encoder.dim)
    arr = np.asarray(vec, dtype=np.float32)
    if arr.shape != (n, dim):
        raise ValueError(
            f"encoder {encoder.name} returned shape {arr.shape} for {n} texts, "
            f"expected ({n}, {dim})"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"encoder {encoder.name} returned NaN or inf")
    return arr


class EncodeActor:
    """One actor of the pool: builds the encoder once, then embeds blocks of texts.

    ``spec``: an encoder or a factory of one, or a one-item list holding a Ray
    ``ObjectRef`` of either (resolved here: Ray Data does not resolve references in
    constructor arguments, and a bare one would pin the actor's restarts to it).
    ``cache_dir``: the embedding cache to read and append to (None: none).
    A block is ``{"row": (n,) int64, "text": (n,) str}``; the answer is
    ``{"row": row, "vector": (n, dim) float32}``.
    """

    def __init__(self, spec: Any, cache_dir: str | None) -> None:
        configure_threads()
        import ray

        if isinstance(spec, list) and len(spec) == 1 and isinstance(spec[0], ray.ObjectRef):
            spec = ray.get(spec[0])
        self.encoder = _build(spec)
        self.folder: Path | None = None
        self.cached: dict[str, np.ndarray] = {}
        if cache_dir is not None:
            self.folder = encoder_dir(cache_dir, self.encoder)
            self.folder.mkdir(parents=True, exist_ok=True)
            # read once per actor: the texts of one job are distinct, so another
            # actor's new shards never hold this actor's texts
            self.cached = load_shards(self.folder, int(self.encoder.dim))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        configure_threads()  # a reused worker process may have another task's count
        texts = [str(t) for t in batch["text"]]
        keys = [text_key(t) for t in texts]
        out = np.empty((len(texts), int(self.encoder.dim)), dtype=np.float32)
        missing = [i for i, k in enumerate(keys) if k not in self.cached]
        hit = [i for i, k in enumerate(keys) if k in self.cached]
        for i in hit:
            out[i] = self.cached[keys[i]]
        if missing:
            vec = _checked(
                self.encoder, self.encoder.encode([texts[i] for i in missing]), len(missing)
            )
            out[missing] = vec
            if self.folder is not None:
                write_shard(self.folder, [keys[i] for i in missing], vec)
        return {"row": np.asarray(batch["row"], dtype=np.int64), "vector": out}


def write_embeddings(path: str | os.PathLike, texts: Sequence[str], vectors: np.ndarray) -> Path:
    """Write ``(text, vector)`` rows to the Parquet file ``path`` atomically: a string
    column ``text`` and a ``fixed_size_list<float32>[dim]`` column ``vector``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(texts):
        raise ValueError(
            f"write_embeddings: {len(texts)} texts for vectors of shape {vectors.shape}"
        )
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.table({"text": pa.array([str(t) for t in texts], pa.string()), "vector": column})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: pq.write_table(table, fh), mode=0o666)


def _last_line(exc: BaseException) -> str:
    """The last line of an error's text: for an actor's failed start, the original
    ``SomeError: message`` under Ray's traceback."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _check_args(workers: Any, block_rows: Any) -> None:
    for name, value in (("workers", workers), ("block_rows", block_rows)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def embed_ray(
    texts: Sequence[str],
    encoder: EncoderSpec,
    *,
    workers: int = 2,
    out: str | os.PathLike | None = None,
    block_rows: int = 1024,
    cache_dir: str | os.PathLike | None = None,
    address: str | None = None,
) -> np.ndarray:
    """(n, dim) float32 embeddings of ``texts`` from a Ray actor pool; row i is the
    vector of ``texts[i]``, equal to ``encoder.encode`` of it.

    Parameters
    ----------
    texts: (n,) strings; each distinct text is encoded once.
    encoder: an encoder (``name``, ``dim``, ``encode``) that pickles -- it is put in
        the object store once and every actor gets a copy -- or a zero-argument
        factory (a class such as ``USEEncoder``, a function) that builds it in each
        actor; use a factory for a model that does not pickle or is large.
    workers: actors in the pool (at most one per block).
    out: also write the distinct (text, vector) pairs to this Parquet file
        (:func:`write_embeddings`).
    block_rows: texts per block (one ``encode`` call each).
    cache_dir: the embedding cache of :func:`~noiseforge.relevance.embed.embed_cached`
        to read and append to, on shared storage on a cluster; None: no cache.
    address: the Ray cluster (:func:`noiseforge.distributed.connect`).

    Raises
    ------
    ValueError
        ``workers`` or ``block_rows`` below 1, or the encoder returned the wrong
        shape or NaN/inf.
    TypeError
        The encoder cannot be sent to the workers (the message says to pass a
        factory), or it lacks name/dim/encode.
    """
    _check_args(workers, block_rows)
    texts = [str(t) for t in texts]
    codes, distinct = pd.factorize(pd.Series(texts, dtype=object), sort=False)
    distinct = [str(t) for t in distinct]
    if not distinct:
        dim = int(_build(encoder).dim)
        if out is not None:
            write_embeddings(out, [], np.zeros((0, dim), dtype=np.float32))
        return np.zeros((0, dim), dtype=np.float32)
    if not _is_factory(encoder):
        _build(encoder)  # an instance: check it here, not in every actor
    connect(address)
    ray = require_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.raise_original_map_exception = True  # the encoder's own error, not a wrapper
    try:
        spec_ref = ray.put(encoder)
    except Exception as exc:  # pickling errors come as TypeError, PicklingError, ...
        raise TypeError(
            f"the encoder {type(encoder).__name__} cannot be sent to Ray workers ({exc}); "
            "pass a zero-argument factory that builds it (e.g. the class itself) instead"
        ) from None
    blocks = [
        pd.DataFrame(
            {
                "row": np.arange(s, min(s + block_rows, len(distinct)), dtype=np.int64),
                "text": distinct[s : s + block_rows],
            }
        )
        for s in range(0, len(distinct), block_rows)
    ]
    ds = None
    try:
        ds = ray.data.from_pandas(blocks).map_batches(
            EncodeActor,
            batch_size=None,  # one block, one encode call
            batch_format="numpy",
            fn_constructor_args=([spec_ref], None if cache_dir is None else os.fspath(cache_dir)),
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(blocks))),
            num_cpus=ACTOR_CPUS,
        )
        vectors: np.ndarray | None = None
        filled = np.zeros(len(distinct), dtype=bool)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                vec = np.asarray(batch["vector"], dtype=np.float32)
                if vectors is None:
                    vectors = np.empty((len(distinct), vec.shape[1]), dtype=np.float32)
                rows = np.asarray(batch["row"], dtype=np.int64)
                vectors[rows] = vec
                filled[rows] = True
        except ray.exceptions.RayActorError as exc:
            if not getattr(exc, "actor_init_failed", False):
                raise
            raise RuntimeError(
                f"an embedding actor could not build its encoder: {_last_line(exc)}"
            ) from None
    finally:
        # a finished dataset keeps its actors (and their CPUs) until it is collected,
        # and an error's traceback keeps this frame's dataset alive: drop it here
        ds = None
        gc.collect()
    if vectors is None or not filled.all():
        missing = int((~filled).sum())
        raise RuntimeError(
            f"the embedding job returned no vector for {missing} of {len(distinct)} texts "
            "(a lost block); run it again"
        )
    if out is not None:
        write_embeddings(out, distinct, vectors)
    return vectors[codes]
