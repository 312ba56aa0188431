"""A native HNSW index with per-query exclusion lists.

Hierarchical Navigable Small World graphs (Malkov & Yashunin, TPAMI 2018),
implemented in C++ (``csrc/index/hnsw.cpp``): multithreaded insertion and
batched multithreaded search, both with the GIL released.
"""

from __future__ import annotations

import os
import struct
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from noiseforge import _native
from noiseforge._common import runtime
from noiseforge._common.files import atomic_write
from noiseforge._common.validation import check_int, is_int
from noiseforge._common.vectors import METRIC_NAMES, METRICS, exclusion_csr, int64_ids

QUANTIZATIONS = {"none": 0, "sq8": 1}
_QUANTIZATION_NAMES = {v: k for k, v in QUANTIZATIONS.items()}

# Limits, the same on construction and on load (csrc/index/hnsw.cpp, Index::deserialize):
# an index that can be built can be saved and loaded back.
MAX_DIM = 1 << 20
MAX_M = 256
MAX_EF_CONSTRUCTION = 1 << 20
MAX_SIZE = 2**32 - 2  # internal ids are uint32 (one value reserved)
# Thread counts above this are refused as mistakes; at most os.cpu_count() threads start.
MAX_THREADS = 4096
# Vector components must lie in [-MAX_ABS_VALUE, MAX_ABS_VALUE]: the graph walk and the
# scores are float32 dot products and squared distances over up to MAX_DIM dimensions
# (and SQ8 ranges up to ~3.4x the data's), which stay finite -- never inf, or NaN from
# inf - inf -- for components of this size.
MAX_ABS_VALUE = 1e15
# An SQ8 range in a file may reach this far (|lo| and 255 * scale): 30x what add() can
# produce from vectors within MAX_ABS_VALUE, and still free of NaN in the walk's float32
# arithmetic (an l2 walk distance may round up to inf, which orders like any large one).
_MAX_SQ8_RANGE = 1e17
_INT32_MAX = 2**31 - 1
_ROW_BLOCK_ELEMENTS = 1 << 22  # scan for bad values in blocks (bounded temporaries)

ArrayLike = np.ndarray | torch.Tensor | Sequence


class IndexFormatError(ValueError):
    """An index file is truncated, corrupted or of an unknown format."""


def _module():
    mod = _native.native()
    if mod is None:
        raise RuntimeError(f"HNSWIndex needs the native module: {_native.native_error()}")
    return mod


def _check_int(name: str, value, low: int, high: int, hint: str = "") -> int:
    """``value`` as an int in [low, high]; TypeError for non-integers (bools included)."""
    return check_int(name, value, low, high, hint=hint, error=TypeError)


# GNU OpenMP's thread pool does not survive fork(): a parallel region with more than
# one thread in a forked child hangs, so a child runs the index on one thread, and the
# readers-writer locks of live indexes start afresh there.
_live_indexes: weakref.WeakSet[HNSWIndex] = weakref.WeakSet()


def _reset_locks_after_fork() -> None:
    for index in list(_live_indexes):
        index._lock.reset_after_fork()


runtime.on_fork_in_child(_reset_locks_after_fork)


def _threads(num_threads: int | None) -> int:
    """The thread count to run with: None or 0 is the default (torch's thread count);
    1 .. MAX_THREADS is accepted and capped at os.cpu_count() (more threads than CPUs
    only add overhead, and each one holds per-thread buffers and a stack)."""
    if num_threads is None or (is_int(num_threads) and num_threads == 0):
        requested = runtime.cpu_threads()
    else:
        requested = _check_int(
            "num_threads",
            num_threads,
            1,
            MAX_THREADS,
            " (None or 0 for the default: torch.get_num_threads())",
        )
    if runtime.forked_child():
        return 1
    return max(1, min(requested, os.cpu_count() or 1))


class _ReadWriteLock:
    """Searches (and other reads) may run together; add() runs alone. The native index
    must not be read while add() grows it (it reallocates its arrays). Writers go first
    once waiting, so a stream of searches cannot starve an add. Not re-entrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self.broken = False  # forked while another thread was inside add()

    def reset_after_fork(self) -> None:
        # only the forking thread survives in the child: nobody else holds the lock
        self.broken = self._writing
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    def _check_broken(self) -> None:
        if self.broken:
            raise RuntimeError(
                "this HNSWIndex was being changed by add() in another thread when the process "
                "forked, so its copy in this process is incomplete; load it from a file here"
            )

    @contextmanager
    def read(self) -> Iterator[None]:
        self._check_broken()
        cond = self._cond
        with cond:
            while self._writing or self._writers_waiting:
                cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with cond:
                self._readers -= 1
                if self._readers == 0:
                    cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        self._check_broken()
        cond = self._cond
        with cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with cond:
                self._writing = False
                cond.notify_all()


_STORED = "the file is damaged or was not written by this package"


def _first_bad_row(name: str, arr: np.ndarray, what: str = "row", fix: str | None = None) -> None:
    """Raise for the first row of the 2-D ``arr`` with a NaN/inf or a component beyond
    +-MAX_ABS_VALUE (scanned in blocks, so the temporaries stay small); ``fix`` replaces
    the advice to the caller."""
    if arr.size == 0:
        return
    step = max(1, _ROW_BLOCK_ELEMENTS // max(1, arr.shape[1]))
    for start in range(0, arr.shape[0], step):
        block = arr[start : start + step]
        ok = (np.abs(block) <= MAX_ABS_VALUE).all(axis=1)  # False for NaN too
        if ok.all():
            continue
        r = int(np.flatnonzero(~ok)[0])
        row = block[r]
        if not np.isfinite(row).all():
            raise ValueError(
                f"{name} {what} {start + r} contains NaN or inf; "
                + (fix or "drop or repair that vector (it has no distance to anything)")
            )
        big = float(np.abs(row).max())
        raise ValueError(
            f"{name} {what} {start + r} has a component of magnitude {big:.3g}; the index "
            f"takes components within +-{MAX_ABS_VALUE:g} (its float32 dot products and "
            "distances would overflow); " + (fix or "rescale the vectors, e.g. normalise them")
        )


def _as_matrix(name: str, x: ArrayLike, dim: int) -> np.ndarray:
    """(n, dim) C-contiguous float32 rows from an array, tensor or nested sequence.

    float16, bfloat16 and float64 are converted to float32 (what the index stores);
    NaN/inf and components beyond +-MAX_ABS_VALUE are refused before the conversion.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise TypeError(f"{name} must be real floating-point vectors, got {t.dtype}")
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)  # float16/bfloat16: exact; numpy has no bfloat16
        arr = t.cpu().numpy()
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(
                f"{name} must be an (n, {dim}) array of numbers; could not read it as one ({exc})"
            ) from None
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must be floating-point vectors (float32; float16/float64 are converted), "
            f"got dtype {arr.dtype}; convert with .astype(np.float32)"
        )
    if arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)  # float16: exact, and comparable with MAX_ABS_VALUE
    if arr.ndim == 1 and arr.size == dim:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(
            f"{name} must have shape (n, {dim}), one row per vector, got {arr.shape}; "
            f"reshape a single vector with .reshape(1, {dim})"
        )
    _first_bad_row(name, arr)
    return np.ascontiguousarray(arr, dtype=np.float32)


class _Layout:
    """Where the arrays of a file that the native reader accepted lie (hnsw.cpp,
    Index::serialize): header, SQ8 range, vectors (count, dim) float32, ids int64."""

    def __init__(self, data: bytes) -> None:
        version, self.dim = struct.unpack_from("<II", data, 8)
        pos = 28
        self.quantization = 0
        if version >= 2:
            (self.quantization,) = struct.unpack_from("<I", data, pos)
            pos += 4
        (self.count,) = struct.unpack_from("<Q", data, pos + 8)  # after the seed
        pos += 8 + 8 + 8 + 4  # seed, count, entry point, max level
        self.range_offset = pos
        pos += 2 * 4 * self.dim if self.quantization == QUANTIZATIONS["sq8"] else 0
        self.vectors_offset = pos
        self.ids_offset = pos + 4 * self.count * self.dim

    def check(self, data: bytes, index) -> None:
        if (self.dim, self.count, self.quantization) != (index.dim, index.size, index.quantization):
            raise ValueError("the header disagrees with the data")
        if self.quantization == QUANTIZATIONS["sq8"]:
            rng = np.frombuffer(data, np.float32, 2 * self.dim, self.range_offset)
            lo, scale = rng[: self.dim], rng[self.dim :].astype(np.float64)
            bad = ~((np.abs(lo) <= _MAX_SQ8_RANGE) & (255.0 * scale <= _MAX_SQ8_RANGE))
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"invalid quantization range (dimension {j}: lo={lo[j]:.3g}, "
                    f"scale={scale[j]:.3g}; no vectors within +-{MAX_ABS_VALUE:g} give it): "
                    f"{_STORED}"
                )
        vectors = np.frombuffer(data, np.float32, self.count * self.dim, self.vectors_offset)
        _first_bad_row(
            "stored vector", vectors.reshape(self.count, self.dim), what="at node", fix=_STORED
        )
        ids = np.frombuffer(data, np.int64, self.count, self.ids_offset)
        if self.count and ids.min() < 0:
            r = int(np.flatnonzero(ids < 0)[0])
            raise ValueError(
                f"stored id {int(ids[r])} (node {r}) is negative; ids are >= 0 (-1 pads "
                f"search results): {_STORED}"
            )


class HNSWIndex:
    """Approximate nearest-neighbour index (HNSW) over float32 vectors.

    Parameters
    ----------
    dim:
        Vector dimension, 1 .. 2**20.
    metric:
        ``"cosine"`` (vectors and queries are L2-normalised; score = cosine
        similarity), ``"ip"`` (score = inner product) or ``"l2"`` (score =
        squared Euclidean distance). Higher scores are better for cosine/ip,
        lower for l2; results always come best first.
    M:
        Links per node on the upper layers (2M on the bottom layer), 2 .. 256.
        Larger M: better recall and more memory (about ``(2M + 1) * 4`` bytes
        per vector plus the vector itself).
    ef_construction:
        Beam width while inserting, 1 .. 2**20. Larger: better graph, slower build.
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

    Vectors and queries are float32 (float16, bfloat16 and float64 input is
    converted), finite, with components within ``+-MAX_ABS_VALUE`` (1e15) so
    that float32 scores cannot overflow. Ids are int64 >= 0 (-1 pads short
    result rows). ``num_threads`` of :meth:`add` and :meth:`search`: None or 0
    for the default (``torch.get_num_threads()``), else 1 .. 4096; at most
    ``os.cpu_count()`` threads start (one in a forked child, where GNU OpenMP's
    pool would hang). Searches from several Python threads run together; an
    :meth:`add` waits for them and they wait for it.
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
        dim = _check_int("dim", dim, 1, MAX_DIM)
        M = _check_int("M", M, 2, MAX_M)
        ef_construction = _check_int("ef_construction", ef_construction, 1, MAX_EF_CONSTRUCTION)
        if not isinstance(metric, str) or metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        seed = check_int("seed", seed, 0, 2**64 - 1, hint=" (a 64-bit seed)")
        if not isinstance(quantization, str) or quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization must be one of {sorted(QUANTIZATIONS)}, got {quantization!r}"
            )
        self._attach(
            _module().HNSW(
                dim, METRICS[metric], M, ef_construction, int(seed), QUANTIZATIONS[quantization]
            )
        )

    def _attach(self, native) -> None:
        self._index = native
        self._lock = _ReadWriteLock()
        _live_indexes.add(self)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._index.dim

    @property
    def metric(self) -> str:
        return METRIC_NAMES[self._index.metric]

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
        with self._lock.read():
            return self._index.memory_bytes

    def __len__(self) -> int:
        with self._lock.read():
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
        """Insert (n, dim) vectors with int64 ``ids`` >= 0 (default: 0, 1, ... continuing
        from the current size). float16/bfloat16/float64 vectors are converted to float32
        (the index stores float32; a float64 vector moves by at most float32 rounding).
        Raises ValueError for NaN/inf rows or components beyond +-1e15, a wrong shape, a
        negative id, or an id that is already present or repeated; TypeError for
        non-float vectors or non-integer ids. A rejected add changes nothing."""
        x = _as_matrix("vectors", vectors, self.dim)
        n = x.shape[0]
        threads = _threads(num_threads)
        if ids is not None:
            ids_arr = int64_ids("ids", ids, nonnegative=True)
            if ids_arr.shape != (n,):
                raise ValueError(f"ids has shape {ids_arr.shape}, expected ({n},): one id per row")
        with self._lock.write():
            size = self._index.size
            if size + n > MAX_SIZE:
                raise ValueError(
                    f"an index holds at most {MAX_SIZE} vectors; it has {size} and this add "
                    f"brings {n}: split the data over several indexes"
                )
            if ids is None:
                ids_arr = np.arange(size, size + n, dtype=np.int64)
            try:
                self._index.add(x.ctypes.data, ids_arr.ctypes.data, n, threads)
            except ValueError:
                raise
            except MemoryError:
                raise MemoryError(
                    f"not enough memory to add {n} vectors of dimension {self.dim} to an index "
                    f"of {size}; add fewer or use more memory"
                ) from None
            except Exception as exc:  # std::invalid_argument arrives as ValueError; others too
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

        ``queries``: (n, dim) or one (dim,) vector, converted to float32 like
        :meth:`add`'s vectors. ``k``: 1 .. len(self). ``exclude``: per-query ids
        that must never be returned (a list of arrays, one per query, or CSR
        ``(offsets, ids)``); excluded vectors still guide the graph walk. If the
        beam returns fewer than k admissible results while k exist, ef is widened
        (x4) and finally an exact scan runs, so a row is short (padded with id -1,
        score NaN) only when fewer than k non-excluded vectors exist. ``ef``
        (>= 1) defaults to ``max(128, 2k)``; a beam wider than the index is the
        whole index.

        Returns ``(ids (nq, k) int64, scores (nq, k) float32)``, best first, ties by lower id.
        """
        q = _as_matrix("queries", queries, self.dim)
        k = check_int("k", k, 1, error=TypeError)
        if ef is not None:
            ef = _check_int("ef", ef, 1, 2**63 - 1)
        threads = _threads(num_threads)
        nq = q.shape[0]
        csr = exclusion_csr(exclude, nq)
        with self._lock.read():
            size = self._index.size
            if size == 0:
                raise ValueError("the index is empty: add vectors before searching it")
            if k > size:
                raise ValueError(
                    f"k={k} is larger than the index ({size} vectors); ask for k <= {size}"
                )
            if k > _INT32_MAX:
                raise ValueError(f"k must be at most {_INT32_MAX}, got {k}")
            ef = max(128, 2 * k) if ef is None else ef
            ef = min(ef, max(size, k))  # the native search caps the beam at the index size
            try:
                out_ids = np.empty((nq, k), dtype=np.int64)
                out_scores = np.empty((nq, k), dtype=np.float32)
            except MemoryError:
                raise ValueError(
                    f"the results of {nq} queries x k={k} need {nq * k * 12 / 2**30:.1f} GiB; "
                    "search fewer queries at a time or ask for a smaller k"
                ) from None
            if nq == 0:
                return out_ids, out_scores
            off_ptr, ex_ptr = (0, 0) if csr is None else (csr[0].ctypes.data, csr[1].ctypes.data)
            self._index.search(
                q.ctypes.data,
                nq,
                k,
                ef,
                off_ptr,
                ex_ptr,
                out_ids.ctypes.data,
                out_scores.ctypes.data,
                threads,
            )
        return out_ids, out_scores

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """The versioned binary format (header, data, FNV-1a checksum)."""
        with self._lock.read():
            return self._index.serialize()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> HNSWIndex:
        """An index from :meth:`to_bytes` output; IndexFormatError (a ValueError) if the
        data are truncated, corrupted, of an unknown version, or hold NaN/inf vectors,
        components beyond +-1e15, negative ids or an SQ8 range no vectors could give."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        try:
            native = _module().HNSW.deserialize(data)
            _Layout(data).check(data, native)
        except (RuntimeError, ValueError, MemoryError, struct.error) as exc:
            raise IndexFormatError(f"cannot load HNSW index: {exc}") from None
        self = cls.__new__(cls)
        self._attach(native)
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (a temporary file, then rename)."""
        data = self.to_bytes()
        atomic_write(Path(path), lambda fh: fh.write(data), mode=0o666)

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
        self._attach(HNSWIndex.from_bytes(state)._index)
