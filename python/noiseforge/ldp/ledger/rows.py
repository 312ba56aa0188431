"""Ledger rows as Python values, and the checks every row read from a store passes.

A store is trusted to keep rows, not to keep them valid: someone may edit it,
a disk may damage it. Every row the ledger reads is checked here (types,
finite non-negative costs, well-formed record ranges, a known mechanism,
totals within the budget) and a bad one raises LedgerCorruptError with its
table and key -- never skipped, never repaired silently.
"""

from __future__ import annotations

import getpass
import hashlib
import math
import os
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np

from noiseforge._common.validation import is_int
from noiseforge.ldp.ledger import spending
from noiseforge.ldp.ledger.errors import LedgerCorruptError
from noiseforge.ldp.ledger.records import MAX_RECORD, RecordSet

MECHANISMS = frozenset({"laplace", "gaussian", "discrete_laplace", "other"})
_NAME_MAX = 200  # characters of a release id or batch name


@dataclass(frozen=True)
class Release:
    """One charged batch: which records, at what cost, under which idempotency key.

    ``replayed`` is True when :meth:`PrivacyLedger.charge` found this exact
    charge already stored (a retry) and charged nothing.
    """

    release_id: str
    batch: str
    records: RecordSet
    epsilon: float
    delta: float
    mechanism: str
    note: str
    time: float
    seq: int
    output_digest: str | None = None
    replayed: bool = False
    origin: str = ""  # who charged it: user@host pid N
    request: str = ""  # digest of (records, epsilon, delta, mechanism): what a retry repeats


@dataclass(frozen=True)
class LedgerAudit:
    """What :meth:`PrivacyLedger.verify` checked."""

    entries: int
    spans: int
    records_charged: int
    max_epsilon: float
    max_delta: float


def request_digest(records: RecordSet, epsilon: float, delta: float, mechanism: str) -> str:
    h = hashlib.sha256(b"noiseforge/charge/v1\0")
    h.update(records.to_bytes())
    h.update(f"\0{epsilon.hex()}\0{delta.hex()}\0{mechanism}".encode())
    return h.hexdigest()


def check_budget(name: str, value: Any, *, delta: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if delta:
        if not (0.0 <= value < 1.0):
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    elif not value > 0:  # NaN fails too; inf means no limit
        raise ValueError(f"{name} must be > 0 (math.inf for no limit), got {value!r}")
    return value


def check_cost(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_name(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if is_int(value):
        value = str(int(value))
    if not isinstance(value, str) or not value or len(value) > _NAME_MAX:
        raise ValueError(f"{name} must be a non-empty string of at most {_NAME_MAX} characters")
    if not value.isprintable():
        raise ValueError(f"{name} must be printable text, got {value!r}")
    return value


def check_note(note: Any) -> str:
    """A free-text note of an entry: any text that every store can hold."""
    if not isinstance(note, str):
        raise TypeError(f"note must be a string, got {type(note).__name__}")
    if len(note) > 10_000:
        raise ValueError(f"note has {len(note)} characters; keep it under 10000")
    if "\x00" in note:
        raise ValueError("note contains a NUL character, which PostgreSQL cannot store")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("note is not valid Unicode text (it holds a lone surrogate)") from None
    return note


def origin() -> str:
    """Who is charging: ``user@host pid N`` (recorded with every entry, for audits)."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (some containers): the numeric uid
        user = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class RowChecker:
    """Validates rows of one ledger's store (``where`` names it in messages)."""

    def __init__(self, where: str, epsilon_budget: float, delta_budget: float) -> None:
        self.where = where
        self.epsilon_budget = epsilon_budget
        self.delta_budget = delta_budget

    def span(self, row: tuple) -> tuple[int, int, float, float]:
        where = f"{self.where}: table nf_spans"
        try:
            lo, hi, eps, delta = row
        except (TypeError, ValueError):
            raise LedgerCorruptError(f"{where}: a row of the wrong shape {row!r}") from None
        where += f", span lo={lo!r}"
        if not (is_int(lo) and is_int(hi)):
            raise LedgerCorruptError(f"{where}: bounds must be integers, got {lo!r}, {hi!r}")
        if not 0 <= lo <= hi <= MAX_RECORD:
            raise LedgerCorruptError(f"{where}: bounds {lo}..{hi} are not a valid id range")
        for label, v, cap in (
            ("epsilon", eps, self.epsilon_budget),
            ("delta", delta, self.delta_budget),
        ):
            if isinstance(v, bool) or not isinstance(v, float) or not math.isfinite(v) or v < 0:
                raise LedgerCorruptError(
                    f"{where}: {label} total {v!r} is not a finite number >= 0; the store "
                    "was edited or damaged outside noiseforge: restore it from a backup"
                )
            if v > cap:
                raise LedgerCorruptError(
                    f"{where}: {label} total {v!r} is above the budget {cap!r}, which no "
                    "accepted charge can cause; restore the store from a backup"
                )
        return lo, hi, eps, delta

    def spans(self, rows: list[tuple]) -> spending.Spans:
        """The spans of ``rows`` (sorted by lo), every row checked as :meth:`span` does.

        Vectorised: the columns become int64 / float64 arrays only if every value has
        the column's type, and the range, finiteness, budget and order checks run on
        the arrays; any failure re-checks row by row to name the first bad one.
        """
        if not rows:
            return spending.Spans.empty()
        try:
            lo, hi, eps, delta = (np.array(c) for c in zip(*rows, strict=True))
        except (TypeError, ValueError):
            lo = hi = eps = delta = np.zeros(0)  # ragged or odd rows: the slow path says which
        ok = (
            lo.dtype == np.int64
            and hi.dtype == np.int64
            and eps.dtype == np.float64
            and delta.dtype == np.float64
            and len(lo) == len(rows)
        )
        if ok:
            ok = bool(
                (lo >= 0).all()
                and (lo <= hi).all()
                and (hi <= MAX_RECORD).all()
                and np.isfinite(eps).all()
                and np.isfinite(delta).all()
                and (eps >= 0).all()
                and (delta >= 0).all()
                and (eps <= self.epsilon_budget).all()
                and (delta <= self.delta_budget).all()
            )
        if not ok:
            for r in rows:
                self.span(r)
            raise LedgerCorruptError(f"{self.where}: table nf_spans holds malformed rows")
        bad = np.flatnonzero(lo[1:] <= hi[:-1])
        if bad.size:
            i = int(bad[0])
            raise LedgerCorruptError(
                f"{self.where}: table nf_spans: spans at lo={int(lo[i])} and "
                f"lo={int(lo[i + 1])} overlap; restore the store from a backup"
            )
        return spending.Spans(lo, hi, eps, delta)

    def entry(self, row: tuple) -> Release:
        where = f"{self.where}: table nf_entries"
        try:
            (
                seq,
                release_id,
                batch,
                eps,
                delta,
                mechanism,
                note,
                when,
                n,
                blob,
                request,
                out,
                origin,
            ) = row
        except (TypeError, ValueError):
            raise LedgerCorruptError(f"{where}: a row of the wrong shape") from None
        where += f", entry seq={seq!r}"

        def bad(what: str) -> LedgerCorruptError:
            return LedgerCorruptError(
                f"{where}: {what}; the store was edited or damaged outside noiseforge: "
                "restore it from a backup (`noiseforge ldp ledger verify` lists every bad row)"
            )

        if not is_int(seq) or seq < 1:
            raise bad(f"sequence number {seq!r} is not a positive integer")
        for label, v in (("release_id", release_id), ("batch", batch)):
            if not isinstance(v, str) or not v:
                raise bad(f"{label} {v!r} is not a non-empty string")
        for label, v in (("epsilon", eps), ("delta", delta)):
            if isinstance(v, bool) or not isinstance(v, float) or not math.isfinite(v) or v < 0:
                raise bad(f"{label} {v!r} is not a finite number >= 0")
        if mechanism not in MECHANISMS:
            raise bad(f"mechanism {mechanism!r} is not one of {sorted(MECHANISMS)}")
        if not isinstance(note, str):
            raise bad(f"note {note!r} is not a string")
        if not isinstance(origin, str):
            raise bad(f"origin {origin!r} is not a string")
        if isinstance(when, bool) or not isinstance(when, float) or not math.isfinite(when):
            raise bad(f"time {when!r} is not a finite number")
        try:
            records = RecordSet.from_bytes(blob)
        except (TypeError, ValueError) as exc:
            raise bad(f"its record set is malformed ({exc})") from None
        if not is_int(n) or n != len(records):
            raise bad(f"it counts {n!r} records but holds {len(records)}")
        for label, v in (("request digest", request), ("output digest", out)):
            if v is None and label == "output digest":
                continue
            if (
                not isinstance(v, str)
                or len(v) != 64
                or any(c not in "0123456789abcdef" for c in v)
            ):
                raise bad(f"{label} {v!r} is not a sha256 hex digest")
        return Release(
            release_id,
            batch,
            records,
            eps,
            delta,
            mechanism,
            note,
            when,
            seq,
            out,
            origin=origin,
            request=request,
        )
