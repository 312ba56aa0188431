"""Reading the JSON-lines journals of earlier noiseforge versions, strictly.

Before the transactional stores, a ledger was a file of JSON lines, one
release per line: ``{"records": [...], "epsilon": ..., "delta": ...,
"mechanism": ..., "note": ..., "time": ...}``. :func:`read_journal` parses
such a file and refuses anything a ledger must not accept -- a NaN, negative
or boolean cost, a record id that is not a non-negative integer or appears
twice in a line, unknown or missing fields, a truncated last line -- naming
the line and the field, so that an import never silently changes what was
spent. The ledger imports a validated journal once (see
:meth:`noiseforge.ldp.PrivacyLedger.import_journal`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from noiseforge.ldp.ledger.records import RecordSet

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
        if not isinstance(records, list) or any(
            isinstance(r, bool) or not isinstance(r, int) for r in records
        ):
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
