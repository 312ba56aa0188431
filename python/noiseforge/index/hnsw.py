"""A native HNSW index with per-query exclusion lists.

Hierarchical Navigable Small World graphs (Malkov & Yashunin, TPAMI 2018),
implemented in C++ (``csrc/index/hnsw.cpp``): multithreaded insertion and
batched multithreaded search, both with the GIL released.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from noiseforge import _native
from noiseforge.ops import _backends as B

METRICS = {"l2": 0, "ip": 1, "cosine": 2}
_METRIC_NAMES = {v: k for k, v in METRICS.items()}
QUANTIZATIONS = {"none": 0, "sq8": 1}
_QUANTIZATION_NAMES = {v: k for k, v in QUANTIZATIONS.items()}

ArrayLike = np.ndarray | torch.Tensor | Sequence


class IndexFormatError(ValueError):
    """An index file is truncated, corrupted or of an unknown format."""


def _module():
    mod = _native.native()
    if mod is None:
        raise RuntimeError(f"HNSWIndex needs the native module: {_native.native_error()}")
    return mod


def _as_matrix(name: str, x: ArrayLike, dim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must be float32 vectors, got dtype {arr.dtype}")
        raise TypeError(
            f"{name} must be float32, got {arr.dtype} (convert with .astype(np.float32))"
        )
    if arr.ndim == 1 and arr.size == dim:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}), got {arr.shape}")
    arr = np.ascontiguousarray(arr)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} row {int(np.flatnonzero(bad)[0])} contains NaN or inf")
    return arr


def _int64_ids(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64; {int(arr.max())} does not")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _exclusions(exclude, nq: int) -> tuple[np.ndarray, np.ndarray] | None:
    """CSR (offsets, ids) from a list of per-query id arrays or a (offsets, ids) pair."""
    if exclude is None:
        return None
    if isinstance(exclude, tuple) and len(exclude) == 2:
        offsets = np.ascontiguousarray(np.asarray(exclude[0]), dtype=np.int64)
        ids = _int64_ids("exclude ids", exclude[1]).reshape(-1)
        if (
            offsets.shape != (nq + 1,)
            or offsets[0] != 0
            or np.any(np.diff(offsets) < 0)
            or offsets[-1] != ids.size
        ):
            raise ValueError(
                f"exclude as CSR needs offsets of shape ({nq + 1},), starting at 0, "
                f"non-decreasing and ending at len(ids) = {ids.size}"
            )
        return offsets, ids
    if len(exclude) != nq:
        raise ValueError(f"exclude has {len(exclude)} lists for {nq} queries; give one per query")
    lists = [_int64_ids("exclude ids", e).reshape(-1) for e in exclude]
    offsets = np.zeros(nq + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([e.size for e in lists])
    ids = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    return offsets, np.ascontiguousarray(ids)


class HNSWIndex:
    """Approximate nearest-neighbour index (HNSW) over float32 vectors.

    Parameters
    ----------
    dim:
        Vector dimension.
    metric:
        ``"cosine"`` (vectors and queries are L2-normalised; score = cosine
        similarity), ``"ip"`` (score = inner product) or ``"l2"`` (score =
        squared Euclidean distance). Higher scores are better for cosine/ip,
        lower for l2; results always come best first.
    M:
        Links per node on the upper layers (2M on the bottom layer). Larger M:
        better recall and more memory (about ``(2M + 1) * 4`` bytes per vector
        plus the vector itself).
    ef_construction:
        Beam width while inserting. Larger: better graph, slower build.
    seed:
        Seed of the level draws. With one thread the graph is reproducible;
        with several, insertion order (and so the graph) varies.
    quantization:
        How the graph walk reads vectors. ``"sq8"`` (default): one byte per
        dimension, ``x_i ~ lo_i + scale_i * c_i`` with the per-dimension range of
        the vectors added (a later batch outside it widens it and re-encodes);
        a quarter of the memory traffic of float32. The whole final beam (``ef``
        candidates) is then re-ranked with the float32 vectors, so the returned
        scores are exact and only the walk is approximate. ``"none"``: the walk
        reads float32. SQ8 keeps the float32 vectors too (about ``dim`` bytes
        more per vector than ``"none"``). The walk's arithmetic depends on the
        CPU (AVX-512 VNNI rounds the query to int8 as well), so results may
        differ slightly between machines; scores are exact on all of them.

    ``add`` and ``search`` must not run at the same time from different threads.
    """

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        M: int = 16,
        ef_construction: int = 200,
        seed: int = 0,
        quantization: str = "sq8",
    ) -> None:
        for name, value, low in (
            ("dim", dim, 1),
            ("M", M, 2),
            ("ef_construction", ef_construction, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        if quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization must be one of {sorted(QUANTIZATIONS)}, got {quantization!r}"
            )
        self._index = _module().HNSW(
            int(dim),
            METRICS[metric],
            int(M),
            int(ef_construction),
            int(seed),
            QUANTIZATIONS[quantization],
        )

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._index.dim

    @property
    def metric(self) -> str:
        return _METRIC_NAMES[self._index.metric]

    @property
    def M(self) -> int:
        return self._index.M

    @property
    def ef_construction(self) -> int:
        return self._index.ef_construction

    @property
    def quantization(self) -> str:
        return _QUANTIZATION_NAMES[self._index.quantization]

    @property
    def memory_bytes(self) -> int:
        """Approximate bytes held by vectors, links and the id map."""
        return self._index.memory_bytes

    def __len__(self) -> int:
        return self._index.size

    def __repr__(self) -> str:
        return (
            f"HNSWIndex(dim={self.dim}, metric={self.metric!r}, M={self.M}, "
            f"ef_construction={self.ef_construction}, quantization={self.quantization!r}, "
            f"size={len(self)})"
        )

    # ------------------------------------------------------------------ add / search
    def add(
        self, vectors: ArrayLike, ids: ArrayLike | None = None, *, num_threads: int | None = None
    ) -> None:
        """Insert (n, dim) float32 vectors with int64 ``ids`` (default: 0, 1, ... continuing
        from the current size). Raises ValueError for NaN/inf rows, a wrong shape, or an id
        that is already present or repeated."""
        x = _as_matrix("vectors", vectors, self.dim)
        n = x.shape[0]
        if ids is None:
            ids_arr = np.arange(len(self), len(self) + n, dtype=np.int64)
        else:
            ids_arr = _int64_ids("ids", ids)
            if ids_arr.shape != (n,):
                raise ValueError(f"ids has shape {ids_arr.shape}, expected ({n},)")
        try:
            self._index.add(x.ctypes.data, ids_arr.ctypes.data, n, num_threads or B.cpu_threads())
        except ValueError:
            raise
        except Exception as exc:  # std::invalid_argument arrives as ValueError; anything else too
            raise ValueError(str(exc)) from None

    def search(
        self,
        queries: ArrayLike,
        k: int,
        *,
        ef: int | None = None,
        exclude=None,
        num_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best vectors for each query.

        ``exclude``: per-query ids that must never be returned (a list of arrays,
        one per query, or CSR ``(offsets, ids)``); excluded vectors still guide the
        graph walk. If the beam returns fewer than k admissible results while k
        exist, ef is widened (x4) and finally an exact scan runs, so a row is
        short (padded with id -1, score NaN) only when fewer than k non-excluded
        vectors exist. ``ef`` defaults to ``max(128, 2k)``.

        Returns ``(ids (nq, k) int64, scores (nq, k) float32)``, best first, ties by lower id.
        """
        q = _as_matrix("queries", queries, self.dim)
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if k > len(self):
            raise ValueError(f"k={k} is larger than the index ({len(self)} vectors)")
        ef = max(128, 2 * int(k)) if ef is None else ef
        if isinstance(ef, bool) or not isinstance(ef, Integral) or ef < 1:
            raise ValueError(f"ef must be an int >= 1, got {ef!r}")
        nq = q.shape[0]
        csr = _exclusions(exclude, nq)
        out_ids = np.empty((nq, int(k)), dtype=np.int64)
        out_scores = np.empty((nq, int(k)), dtype=np.float32)
        off_ptr, ex_ptr = (0, 0) if csr is None else (csr[0].ctypes.data, csr[1].ctypes.data)
        self._index.search(
            q.ctypes.data,
            nq,
            int(k),
            int(ef),
            off_ptr,
            ex_ptr,
            out_ids.ctypes.data,
            out_scores.ctypes.data,
            num_threads or B.cpu_threads(),
        )
        return out_ids, out_scores

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """The versioned binary format (header, data, FNV-1a checksum)."""
        return self._index.serialize()

    @classmethod
    def from_bytes(cls, data: bytes) -> HNSWIndex:
        self = cls.__new__(cls)
        try:
            self._index = _module().HNSW.deserialize(bytes(data))
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise IndexFormatError(f"cannot load HNSW index: {exc}") from None
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (a temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HNSWIndex:
        """Read an index written by :meth:`save`; IndexFormatError if it is corrupted."""
        data = Path(path).read_bytes()
        try:
            return cls.from_bytes(data)
        except IndexFormatError as exc:
            raise IndexFormatError(f"{path}: {exc}") from None

    def __getstate__(self) -> bytes:
        return self.to_bytes()

    def __setstate__(self, state: bytes) -> None:
        self._index = HNSWIndex.from_bytes(state)._index
