"""The ledger's errors (each message says what happened and what to do)."""

from __future__ import annotations

from noiseforge.ldp.ledger.stores import (
    LedgerBusyError,
    LedgerCorruptError,
    LedgerStoreError,
    TransientStoreError,
)

__all__ = [
    "BudgetExceededError",
    "IdempotencyConflictError",
    "LedgerBusyError",
    "LedgerCorruptError",
    "LedgerStoreError",
    "ReleaseConflictError",
    "TransientStoreError",
]


class BudgetExceededError(RuntimeError):
    """A release would take a record past the ledger's budget (nothing was charged)."""


class IdempotencyConflictError(ValueError):
    """A ``(release_id, batch)`` key was already used for a different charge."""


class ReleaseConflictError(ValueError):
    """A retried release produced other data than the first attempt, or used another key."""
