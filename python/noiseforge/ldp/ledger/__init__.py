"""The privacy ledger: per-record budgets that hold across threads, processes and hosts.

``PrivacyLedger`` is the API; underneath, one concern per module:
``records`` (compact record-id sets), ``spending`` (per-record totals as id
ranges, conservative budget arithmetic), ``stores`` (SQLite and PostgreSQL
transactions), ``rows`` (entries and the validation of every row read back),
``journal`` (importing the JSON-lines journals of earlier versions) and
``errors``.
"""

from noiseforge.ldp.ledger.errors import (
    BudgetExceededError,
    IdempotencyConflictError,
    LedgerBusyError,
    LedgerCorruptError,
    LedgerStoreError,
    ReleaseConflictError,
)
from noiseforge.ldp.ledger.journal import JournalError
from noiseforge.ldp.ledger.ledger import PrivacyLedger
from noiseforge.ldp.ledger.records import RecordSet
from noiseforge.ldp.ledger.rows import MECHANISMS, LedgerAudit, Release

__all__ = [
    "MECHANISMS",
    "BudgetExceededError",
    "IdempotencyConflictError",
    "JournalError",
    "LedgerAudit",
    "LedgerBusyError",
    "LedgerCorruptError",
    "LedgerStoreError",
    "PrivacyLedger",
    "RecordSet",
    "Release",
    "ReleaseConflictError",
]
