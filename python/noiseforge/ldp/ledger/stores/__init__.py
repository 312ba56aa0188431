"""Where the privacy ledger keeps its state (see ``base`` for the contract).

``SQLiteStore`` (one machine) and ``PostgresStore`` (several) implement the same
transactions over the same four tables; ``base`` holds what they share.
"""

from noiseforge.ldp.ledger.stores.base import (
    SCHEMA_VERSION,
    SQLITE_MAGIC,
    LedgerBusyError,
    LedgerCorruptError,
    LedgerStoreError,
    SQLStore,
    Transaction,
    TransientStoreError,
    is_postgres_url,
    redact,
)
from noiseforge.ldp.ledger.stores.postgres import PostgresStore
from noiseforge.ldp.ledger.stores.sqlite import SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "SQLITE_MAGIC",
    "LedgerBusyError",
    "LedgerCorruptError",
    "LedgerStoreError",
    "PostgresStore",
    "SQLStore",
    "SQLiteStore",
    "Transaction",
    "TransientStoreError",
    "is_postgres_url",
    "redact",
]
