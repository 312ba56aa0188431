"""Sets of private record ids, stored as sorted inclusive ranges.

The privacy ledger keeps what every record has spent. A release of a million
records with ids 0..999999 is one range, not a million rows: every set is
held as the sorted, disjoint, non-adjacent inclusive ranges ``[lo, hi]`` it
covers (an (R, 2) int64 array), and serialised as ``2 R`` little-endian int64.

Record ids are integers in ``[0, MAX_RECORD]``; ``-1`` is reserved for rows
that mix several records (superimposed pairs), which are never charged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from noiseforge._common.validation import is_int

MAX_RECORD = (1 << 63) - 2  # so that hi + 1 of every range still fits int64


class RecordSet:
    """An immutable set of record ids held as sorted inclusive ranges.

    Build one with :meth:`from_ids` (validates: integers, in range, no id
    twice) or :meth:`from_ranges`; ``len()`` is the number of records.
    """

    __slots__ = ("_count", "_ranges")

    def __init__(self, ranges: np.ndarray, *, _checked: bool = False) -> None:
        if not _checked:
            ranges = _check_ranges(ranges)
        self._ranges = ranges
        self._ranges.flags.writeable = False
        self._count = int((ranges[:, 1] - ranges[:, 0]).sum() + len(ranges)) if len(ranges) else 0

    # ------------------------------------------------------------------ building
    @classmethod
    def from_ids(cls, ids: Any, *, what: str = "records") -> RecordSet:
        """The set of the integer ids ``ids`` (any shape); each id at most once.

        Raises TypeError for non-integer ids (booleans included) and ValueError
        for an id outside ``[0, 2**63 - 2]`` or listed twice, naming it.
        """
        arr = np.asarray(ids)
        if arr.dtype == np.bool_ or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError(
                f"{what} must be integer record ids, got dtype {arr.dtype}; pass an int64 array "
                "(booleans and floats are refused so that no id is silently rounded)"
            )
        flat = arr.reshape(-1)
        if flat.size == 0:
            return cls(np.zeros((0, 2), np.int64), _checked=True)
        if flat.dtype == np.uint64 and int(flat.max()) > MAX_RECORD:
            raise ValueError(f"{what}: id {int(flat.max())} is above the largest id {MAX_RECORD}")
        flat = flat.astype(np.int64, copy=False)
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0:
            raise ValueError(
                f"{what}: id {lo} is negative; record ids are >= 0 (-1 marks mixed rows, which "
                "belong to no single record and are never charged)"
            )
        if hi > MAX_RECORD:
            raise ValueError(f"{what}: id {hi} is above the largest id {MAX_RECORD}")
        step = np.diff(flat)
        if not (step > 0).all():
            flat = np.sort(flat)
            step = np.diff(flat)
            twice = np.flatnonzero(step == 0)
            if twice.size:
                raise ValueError(
                    f"{what}: record {int(flat[twice[0]])} is listed twice; a release charges "
                    "each record once (drop the duplicates, or release them separately)"
                )
        breaks = np.flatnonzero(step != 1)
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks, [flat.size - 1]))
        return cls(np.stack((flat[starts], flat[ends]), axis=1), _checked=True)

    @classmethod
    def from_ranges(cls, ranges: Any) -> RecordSet:
        """From an (R, 2) integer array of inclusive ranges (sorted, disjoint,
        non-adjacent); TypeError for other dtypes, ValueError for other shapes or
        bounds outside ``[0, 2**63 - 2]``."""
        arr = np.asarray(ranges)
        if arr.dtype == np.bool_ or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError(f"ranges must be integer ids, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"ranges must be an (R, 2) array of [lo, hi], got shape {arr.shape}")
        if arr.size and arr.dtype == np.uint64 and int(arr.max()) > MAX_RECORD:
            raise ValueError(f"record ranges must lie in [0, {MAX_RECORD}]")
        return cls(arr.astype(np.int64).reshape(-1, 2).copy())

    @classmethod
    def from_bytes(cls, data: bytes) -> RecordSet:
        """The inverse of :meth:`to_bytes`; raises ValueError for malformed bytes."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"a record set is stored as bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) % 16:
            raise ValueError(f"{len(data)} bytes is not a whole number of (lo, hi) int64 pairs")
        return cls(np.frombuffer(data, dtype="<i8").astype(np.int64).reshape(-1, 2))

    # ------------------------------------------------------------------ reading
    @property
    def ranges(self) -> np.ndarray:
        """(R, 2) int64 inclusive ranges (read-only)."""
        return self._ranges

    def __len__(self) -> int:
        return self._count

    def __contains__(self, record: object) -> bool:
        if not is_int(record):
            return False
        i = int(np.searchsorted(self._ranges[:, 0], int(record), side="right")) - 1
        return i >= 0 and int(self._ranges[i, 1]) >= int(record)

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self._ranges.tolist():
            yield from range(lo, hi + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecordSet) and np.array_equal(self._ranges, other._ranges)

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        shown = ", ".join(f"{lo}" if lo == hi else f"{lo}..{hi}" for lo, hi in self._ranges[:4])
        more = f", ... ({len(self._ranges)} ranges)" if len(self._ranges) > 4 else ""
        return f"RecordSet({self._count} records: {shown}{more})"

    def to_numpy(self) -> np.ndarray:
        """All ids, ascending, as int64 (materialises the set)."""
        if not len(self._ranges):
            return np.zeros(0, np.int64)
        lengths = self._ranges[:, 1] - self._ranges[:, 0] + 1
        starts = np.repeat(self._ranges[:, 0] - np.cumsum(lengths) + lengths, lengths)
        return starts + np.arange(self._count, dtype=np.int64)

    def to_bytes(self) -> bytes:
        return self._ranges.astype("<i8").tobytes()

    def digest(self) -> str:
        """A short, stable name of the set (the default batch id of a release)."""
        return hashlib.sha256(b"noiseforge/records/v1\0" + self.to_bytes()).hexdigest()[:24]


def _check_ranges(ranges: np.ndarray) -> np.ndarray:
    ranges = np.ascontiguousarray(ranges, dtype=np.int64)
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ValueError(f"ranges must be an (R, 2) array, got shape {ranges.shape}")
    if not len(ranges):
        return ranges
    lo, hi = ranges[:, 0], ranges[:, 1]
    if int(lo.min()) < 0 or int(hi.max()) > MAX_RECORD:
        raise ValueError(f"record ranges must lie in [0, {MAX_RECORD}]")
    if not (lo <= hi).all():
        i = int(np.flatnonzero(lo > hi)[0])
        raise ValueError(f"range {i} has lo={int(lo[i])} > hi={int(hi[i])}")
    if len(ranges) > 1 and not (lo[1:] > hi[:-1] + 1).all():
        i = int(np.flatnonzero(lo[1:] <= hi[:-1] + 1)[0])
        raise ValueError(
            f"ranges {i} and {i + 1} overlap, touch or are out of order "
            f"([{int(lo[i])}, {int(hi[i])}] then [{int(lo[i + 1])}, {int(hi[i + 1])}])"
        )
    return ranges
