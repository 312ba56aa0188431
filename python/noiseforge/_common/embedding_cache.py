"""One disk cache of text embeddings for every encoder of both systems.

An encoder is anything with a stable ``name``, a vector ``dim`` and
``encode(texts) -> (n, dim)`` (:class:`TextEncoder`). :func:`embed_cached` encodes
each distinct text at most once per encoder and keeps the vectors on disk, in
``<cache_dir>/<name>-d<dim>/`` (default ``default_cache_dir()/embeddings``) as
append-only shards: every call that meets new texts writes one ``<uuid>.npy``
(the vectors) and then ``<uuid>.keys`` (:func:`text_key` of each text, one a
line), each atomically. A shard counts only once its keys file exists, so an
interrupted writer never leaves a half entry and concurrent writers (threads or
processes) never overwrite each other: each adds its own shard.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from noiseforge._common.files import atomic_write
from noiseforge._common.paths import default_cache_dir


@runtime_checkable
class TextEncoder(Protocol):
    """Anything with a stable ``name``, a vector ``dim`` and ``encode``.

    ``name`` identifies the model (and its version) in the cache: two encoders with
    the same name and ``dim`` must give the same vectors.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32 vectors."""
        ...


class ProgressReport(Protocol):
    """What :func:`embed_cached` reports its encoding to (a progress bar)."""

    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


#: ``(total, description) -> ProgressReport``: opened when there are texts to encode
ProgressFactory = Callable[[int, str], ProgressReport]


def text_key(text: str) -> str:
    """The cache key of a text: SHA-1 of its UTF-8 bytes (hex)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def encoder_dir(cache_dir: str | os.PathLike | None, encoder: TextEncoder) -> Path:
    """The folder of ``encoder``'s shards: ``<cache_dir>/<name>-d<dim>`` (``cache_dir``
    defaults to ``default_cache_dir()/embeddings``; characters of ``name`` other than
    letters, digits, ``.``, ``_`` and ``-`` become ``_``)."""
    if cache_dir is None:
        cache_dir = default_cache_dir() / "embeddings"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", encoder.name)
    return Path(cache_dir) / f"{safe}-d{encoder.dim}"


def load_shards(folder: Path, dim: int) -> dict[str, np.ndarray]:
    """key -> (dim,) vector from every complete shard (``<id>.npy`` + ``<id>.keys``) of
    ``folder``; a vectors file without its keys file is not an entry yet.

    Raises
    ------
    ValueError
        A shard's vectors cannot be read or do not match its keys file (the message
        names the folder to delete to rebuild the cache).
    """
    found: dict[str, np.ndarray] = {}
    for keys_file in sorted(Path(folder).glob("*.keys")):
        vec_file = keys_file.with_suffix(".npy")
        if not vec_file.exists():
            continue
        keys = keys_file.read_text().split()
        try:
            vecs = np.load(vec_file, mmap_mode="r")
        except (ValueError, EOFError) as exc:
            raise ValueError(
                f"embedding cache shard {vec_file} cannot be read ({exc}); delete {folder} "
                "to rebuild the cache"
            ) from exc
        if vecs.shape != (len(keys), dim):
            raise ValueError(
                f"embedding cache shard {vec_file} has shape {vecs.shape}, expected "
                f"({len(keys)}, {dim}); delete {folder} to rebuild the cache"
            )
        for i, k in enumerate(keys):
            found[k] = vecs[i]
    return found


def write_shard(folder: Path, keys: Sequence[str], vectors: np.ndarray) -> str:
    """Add one shard of ``(len(keys), dim)`` ``vectors`` to ``folder``; returns its id.

    The vectors file is written first and the keys file after it, both atomically, so
    readers see the shard whole or not at all.
    """
    if len(keys) != len(vectors):
        raise ValueError(f"write_shard: {len(keys)} keys for {len(vectors)} vectors")
    shard = uuid.uuid4().hex
    atomic_write(folder / f"{shard}.npy", lambda fh: np.save(fh, vectors))
    atomic_write(folder / f"{shard}.keys", lambda fh: fh.write(("\n".join(keys) + "\n").encode()))
    return shard


def _encode(
    encoder: TextEncoder,
    texts: list[str],
    batch_size: int,
    make_progress: ProgressFactory | None,
) -> np.ndarray:
    """(len(texts), dim) float32 from ``encoder``, ``batch_size`` texts a call, checked."""
    dim = int(encoder.dim)
    bar = make_progress(len(texts), f"embedding ({encoder.name})") if make_progress else None
    chunks = []
    try:
        for i in range(0, len(texts), batch_size):
            batch = texts[i : i + batch_size]
            vec = np.asarray(encoder.encode(batch), dtype=np.float32)
            if vec.shape != (len(batch), dim):
                raise ValueError(
                    f"encoder {encoder.name} returned shape {vec.shape} for "
                    f"{len(batch)} texts, expected ({len(batch)}, {dim})"
                )
            if not np.isfinite(vec).all():
                raise ValueError(f"encoder {encoder.name} returned NaN or inf")
            chunks.append(vec)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(chunks)


def embed_cached(
    encoder: TextEncoder,
    texts: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 512,
    make_progress: ProgressFactory | None = None,
) -> np.ndarray:
    """Embeddings of ``texts``, each distinct text encoded at most once per encoder.

    Parameters
    ----------
    encoder: a :class:`TextEncoder`; it is called only for texts not in the cache.
    texts: (n,) strings; duplicates are embedded once.
    cache_dir: the cache root (see :func:`encoder_dir`).
    batch_size: texts per ``encoder.encode`` call.
    make_progress: opens a progress report for the texts to encode (none by default).

    Returns
    -------
    (n, encoder.dim) float32, row i the vector of ``texts[i]``.

    Raises
    ------
    ValueError
        The encoder returned the wrong shape or non-finite values, or a cache
        shard does not match its keys file.
    """
    texts = [str(t) for t in texts]
    dim = int(encoder.dim)
    folder = encoder_dir(cache_dir, encoder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = [text_key(t) for t in texts]
    cached = load_shards(folder, dim)
    missing: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in cached and k not in missing:
            missing[k] = t
    if missing:
        new_keys = list(missing)
        new_vecs = _encode(encoder, [missing[k] for k in new_keys], batch_size, make_progress)
        write_shard(folder, new_keys, new_vecs)
        cached.update(zip(new_keys, new_vecs, strict=True))
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, k in enumerate(keys):
        out[i] = cached[k]
    return out
