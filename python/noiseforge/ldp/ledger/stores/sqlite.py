"""The SQLite store: one ledger file shared by the threads and processes of one machine."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from noiseforge.ldp.ledger.stores.base import (
    LedgerBusyError,
    LedgerCorruptError,
    LedgerStoreError,
    SQLStore,
    Transaction,
)


class SQLiteStore(SQLStore):
    """A ledger in one SQLite file (or in memory, for this process only).

    Any number of threads and processes on one machine share it safely: a
    charge is a ``BEGIN IMMEDIATE`` transaction (waiting up to ``timeout``
    seconds for another writer), the journal is write-ahead (WAL) and every
    commit is synced to disk. Keep the file on a local disk: SQLite's locking
    is not reliable on network file systems -- use PostgreSQL for several
    machines.
    """

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike | None, timeout: float = 60.0) -> None:
        super().__init__()
        self.path = None if path is None else Path(path).expanduser().resolve()
        self.timeout = float(timeout)
        if self.path is not None and not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"the ledger's folder {self.path.parent} does not exist; create it first"
            )
        self._creator_pid = os.getpid()

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def describe(self) -> str:
        return "the in-memory ledger" if self.path is None else str(self.path)

    def reopen_spec(self) -> tuple:
        if self.path is None:
            raise TypeError(
                "an in-memory PrivacyLedger lives in this process only and cannot be sent to "
                "another; give it a file path (SQLite) or a postgresql:// URL to share one "
                "budget with worker processes"
            )
        return (str(self.path), None, self.timeout)

    def _connect(self) -> sqlite3.Connection:
        if self.path is None and os.getpid() != self._creator_pid:
            raise RuntimeError(
                "an in-memory PrivacyLedger was inherited by a forked process: its charges "
                "would not reach the parent's budget. Use a file path (SQLite) or a "
                "postgresql:// URL for a ledger that processes share"
            )
        target = ":memory:" if self.path is None else str(self.path)
        conn = sqlite3.connect(
            target, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            return self._configure(conn)
        except BaseException:
            conn.close()
            raise

    def _configure(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # WAL is a lasting property of the file: set it on ledgers (and new files) only,
        # never on another program's database (which the ledger then refuses to use)
        if self.path is not None and (not tables or "nf_meta" in tables):
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerStoreError(
                    f"{self.path}: SQLite refused write-ahead logging (journal_mode={mode}); "
                    "keep the ledger on a local file system"
                )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return conn

    def _begin(self, cur: Any, write: bool, init: bool) -> None:
        cur.execute("BEGIN IMMEDIATE" if write or init else "BEGIN")

    def _tables(self) -> dict[str, str]:
        return {
            "meta": "nf_meta",
            "releases": "nf_releases",
            "entries": "nf_entries",
            "spans": "nf_spans",
        }

    def existing_tables(self, tx: Transaction) -> set[str]:
        return {r[0] for r in tx.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def foreign_objects(self, tx: Transaction) -> list[str]:
        """Triggers on the ledger's tables: one could make a write silently do
        something else (skip an update of the totals, say). Indexes and views a DBA
        adds are harmless (a violated constraint is a loud LedgerCorruptError)."""
        return [
            f"trigger {r[0]}"
            for r in tx.rows("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        ]

    def _create(self, tx: Transaction) -> None:
        for ddl in (
            "CREATE TABLE nf_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE nf_releases (release_id TEXT PRIMARY KEY, "
            "key_fingerprint TEXT NOT NULL, created REAL NOT NULL)",
            "CREATE TABLE nf_entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "release_id TEXT NOT NULL, batch TEXT NOT NULL, epsilon REAL NOT NULL, "
            "delta REAL NOT NULL, mechanism TEXT NOT NULL, note TEXT NOT NULL, "
            "time REAL NOT NULL, n_records INTEGER NOT NULL, records BLOB NOT NULL, "
            "request TEXT NOT NULL, output_digest TEXT, origin TEXT NOT NULL, "
            "UNIQUE (release_id, batch))",
            "CREATE TABLE nf_spans (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL, "
            "epsilon REAL NOT NULL, delta REAL NOT NULL)",
            "CREATE INDEX nf_releases_key ON nf_releases (key_fingerprint)",
        ):
            tx.execute(ddl)

    def insert_returning_seq(self, tx: Transaction, sql: str, values: Sequence[Any]) -> int:
        tx.execute(sql, values)
        return int(tx.cur.lastrowid)

    def _translate_error(self, exc: Exception) -> Exception | None:
        where = self.describe()
        if isinstance(exc, UnicodeDecodeError):  # SQLite's message about a damaged schema
            text = exc.object.decode("utf-8", "replace") if isinstance(exc.object, bytes) else ""
            return LedgerCorruptError(
                f"{where} is damaged: SQLite reported {text!r}; nothing was charged. Restore "
                "the ledger from a backup"
            )
        if isinstance(exc, MemoryError):  # SQLITE_NOMEM: a damaged page can cause it too
            return LedgerStoreError(
                f"{where}: SQLite ran out of memory reading the ledger -- a damaged database "
                "file can cause this; nothing was charged. Check `noiseforge ldp ledger "
                "verify`, restore the ledger from a backup if it fails"
            )
        if not isinstance(exc, sqlite3.Error):
            return None
        text = str(exc)
        if "locked" in text or "busy" in text:
            return LedgerBusyError(
                f"{where}: another process held the ledger's write lock for more than "
                f"{self.timeout:g} s ({text}); nothing was charged. Retry, or raise timeout="
            )
        if isinstance(exc, sqlite3.IntegrityError):  # the ledger's own writes never violate it
            return LedgerCorruptError(
                f"{where}: the store refused a write its schema allows ({text}): its schema "
                "was changed outside noiseforge; nothing was charged. Restore the ledger"
            )
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text
        ):
            return LedgerCorruptError(
                f"{where} is not a readable SQLite database ({text}); nothing was charged. "
                "Restore the ledger from a backup"
            )
        return LedgerStoreError(
            f"{where}: the ledger could not complete the transaction ({text}); nothing was "
            "charged and the ledger is unchanged. Check free disk space and file permissions"
        )
