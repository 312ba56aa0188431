"""Reading the JSON-lines journals of earlier noiseforge versions, strictly.

Before the transactional stores, a ledger was a file of JSON lines, one
release per line: ``{"records": [...], "epsilon": ..., "delta": ...,
"mechanism": ..., "note": ..., "time": ...}``. :func:`read_journal` parses
such a file and refuses anything a ledger must not accept -- a NaN, negative
or boolean cost, a record id that is not a non-negative integer or appears
twice in a line, unknown or missing fields, a truncated last line -- naming
the line and the field, so that an import never silently changes what was
spent. :func:`import_journal` imports a validated journal into a ledger once
(keyed by content, so appended lines are added later and nothing twice).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from noiseforge._common.validation import is_int
from noiseforge.ldp.ledger.errors import BudgetExceededError
from noiseforge.ldp.ledger.records import RecordSet
from noiseforge.ldp.ledger.rows import MECHANISMS, origin, request_digest

if TYPE_CHECKING:
    from noiseforge.ldp.ledger.ledger import PrivacyLedger

FIELDS = ("records", "epsilon", "delta", "mechanism", "note", "time")
# "" was the old default mechanism of direct charges
_MECHANISM_ALIASES = {"": "other"}


class JournalError(ValueError):
    """A journal line is not a valid ledger entry (the message names the line)."""


@dataclass(frozen=True)
class JournalEntry:
    line: int
    offset: int  # byte offset of the line in the file
    records: RecordSet
    epsilon: float
    delta: float
    mechanism: str
    note: str
    time: float


def _number(value: object, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JournalError(f"{where}: {name} must be a number, got {json.dumps(value)}")
    try:
        value = float(value)
    except OverflowError:  # an integer literal of hundreds of digits
        raise JournalError(f"{where}: {name} is too large for a float") from None
    if not math.isfinite(value) or value < 0:
        raise JournalError(f"{where}: {name} must be finite and >= 0, got {value}")
    return value


def read_journal(path: Path, mechanisms: frozenset[str]) -> list[JournalEntry]:
    """Every entry of the JSON-lines journal at ``path``, validated.

    Raises JournalError naming the first bad line (``path:line``) and what is
    wrong with it; blank lines are skipped.
    """
    path = Path(path)
    raw = path.read_bytes()
    entries: list[JournalEntry] = []
    lines = raw.split(b"\n")
    offset = 0
    for n, line in enumerate(lines, start=1):
        start, offset = offset, offset + len(line) + 1
        where = f"{path}:{n}"
        if not line.strip():
            continue
        if n == len(lines) and not raw.endswith(b"\n"):
            hint = " (the last line has no newline: a write that was cut short)"
        else:
            hint = ""
        try:
            obj = json.loads(line, parse_constant=lambda c: float(c))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise JournalError(f"{where}: not a JSON object ({type(exc).__name__}){hint}") from None
        if not isinstance(obj, dict):
            raise JournalError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        missing = [f for f in FIELDS if f not in obj]
        extra = sorted(set(obj) - set(FIELDS))
        if missing or extra:
            raise JournalError(
                f"{where}: a ledger entry has the fields {', '.join(FIELDS)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else "")
            )
        records = obj["records"]
        if not isinstance(records, list) or not all(is_int(r) for r in records):
            raise JournalError(f"{where}: records must be a list of integer ids")
        try:
            rs = RecordSet.from_ids(records, what=f"{where}: records")
        except (TypeError, ValueError) as exc:
            raise JournalError(str(exc)) from None
        mechanism = obj["mechanism"]
        if not isinstance(mechanism, str):
            raise JournalError(f"{where}: mechanism must be a string")
        mechanism = _MECHANISM_ALIASES.get(mechanism, mechanism)
        if mechanism not in mechanisms:
            raise JournalError(
                f"{where}: unknown mechanism {obj['mechanism']!r} (known: {sorted(mechanisms)})"
            )
        if not isinstance(obj["note"], str):
            raise JournalError(f"{where}: note must be a string")
        entries.append(
            JournalEntry(
                n,
                start,
                rs,
                _number(obj["epsilon"], "epsilon", where),
                _number(obj["delta"], "delta", where),
                mechanism,
                obj["note"],
                _number(obj["time"], "time", where),
            )
        )
    return entries


def import_journal(ledger: PrivacyLedger, path: str | os.PathLike) -> int:
    """Import the JSON-lines journal at ``path`` into ``ledger``, once.

    Every line is validated first (JournalError names a bad one); then the new
    entries are charged in one transaction (a line that would exceed the
    ledger's budget refuses the whole import). An import is keyed by the
    journal's content: importing the same content again -- from any path -- does
    nothing, and a journal that grew by appended lines since its last import
    adds only those lines. A journal rewritten after its import is refused (the
    ledger could not tell which of its entries are new). Returns the number of
    entries imported.
    """
    path = Path(path).expanduser().resolve()
    data = path.read_bytes()
    entries = read_journal(path, MECHANISMS)
    digest = hashlib.sha256(data).hexdigest()
    store = ledger._store
    with store.transaction(write=True) as tx:
        imports = [json.loads(v) for k, v in tx.meta().items() if k.startswith("journal-import:")]
        done = max((n for n in (_imported_prefix(imp, data) for imp in imports) if n), default=0)
        if done == len(data):
            return 0
        if done == 0 and any(imp["path"] == str(path) for imp in imports):
            raise JournalError(
                f"{path} was imported into {store.describe()} before and has since been "
                "rewritten, not appended to: the ledger cannot tell which of its entries are "
                "new, so it imports none. The ledger is the source of truth now: stop writing "
                "the journal"
            )
        new = [e for e in entries if e.offset >= done]
        release_id = f"journal-{digest[:16]}"
        tx.add_release(release_id, "", time.time())
        who = f"imported from {path} by {origin()}"
        for e in new:
            over = ledger._apply(tx, e.records, e.epsilon, e.delta)
            if over is not None:
                raise BudgetExceededError(
                    f"{path}:{e.line}: record {over.record} would exceed this ledger's budget "
                    f"({ledger.epsilon_budget:.6g}, {ledger.delta_budget:.3g}); nothing was "
                    "imported. Open the journal with a budget at least as large as it was "
                    "written with"
                )
            tx.insert_entry(
                (
                    release_id,
                    f"line-{e.line}",
                    e.epsilon,
                    e.delta,
                    e.mechanism,
                    e.note,
                    e.time,
                    len(e.records),
                    e.records.to_bytes(),
                    request_digest(e.records, e.epsilon, e.delta, e.mechanism),
                    None,
                    who,
                )
            )
        record = {"path": str(path), "digest": digest, "bytes": len(data)}
        tx.set_meta({f"journal-import:{digest}": json.dumps(record)})
    return len(new)


def _imported_prefix(imp: dict, data: bytes) -> int:
    """How many leading bytes of ``data`` an earlier import ``imp`` covered (0: none):
    its content must be a prefix of ``data`` that ends at a line break."""
    n = imp["bytes"]
    if n > len(data) or hashlib.sha256(data[:n]).hexdigest() != imp["digest"]:
        return 0
    return n if n == len(data) or data[n - 1 : n] == b"\n" else 0
