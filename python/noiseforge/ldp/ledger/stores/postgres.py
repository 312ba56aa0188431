"""The PostgreSQL store: one ledger per schema, shared by clients on any number of hosts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from noiseforge.ldp.ledger.spending import Spans
from noiseforge.ldp.ledger.stores.base import (
    UPSERT_SPANS,
    LedgerBusyError,
    LedgerCorruptError,
    LedgerStoreError,
    SQLStore,
    Transaction,
    TransientStoreError,
    redact,
)


def _pg_binary_rows(columns: list[np.ndarray]) -> bytes:
    """PostgreSQL's binary COPY format for rows of 8-byte big-endian fields."""
    n, k = len(columns[0]), len(columns)
    fields = [("count", ">i2")]
    for i in range(k):
        fields += [(f"len{i}", ">i4"), (f"v{i}", columns[i].dtype.str)]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["count"] = k
    for i, c in enumerate(columns):
        rows[f"len{i}"] = 8
        rows[f"v{i}"] = c
    header = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    return header + rows.tobytes() + b"\xff\xff"


_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresStore(SQLStore):
    """A ledger in a PostgreSQL database, shared by clients on any number of hosts.

    ``url``: a libpq URL (``postgresql://user:password@host:5432/dbname``);
    ``name``: the schema holding this ledger's tables (default ``noiseforge``),
    so that one database can hold several ledgers. A charge locks the ledger's
    ``lock`` row (``SELECT ... FOR UPDATE``), so charges on one ledger are
    serialised while reads go on. Needs psycopg 3 (``pip install
    'noiseforge[postgres]'``).
    """

    kind = "postgresql"
    placeholder = "%s"

    def __init__(self, url: str, name: str = "noiseforge", timeout: float = 60.0) -> None:
        super().__init__()
        if not _SCHEMA_NAME.match(name or ""):
            raise ValueError(
                f"ledger name {name!r} must be a lower-case SQL identifier (letters, digits, _; "
                "at most 63 characters): it names the PostgreSQL schema of the ledger's tables"
            )
        self.url = url
        self.name = name
        self.timeout = float(timeout)
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ImportError(
                "a postgresql:// ledger needs psycopg 3: pip install 'noiseforge[postgres]' "
                "(or pip install 'psycopg[binary]')"
            ) from None

    def describe(self) -> str:
        return f"{redact(self.url)} (ledger {self.name})"

    def reopen_spec(self) -> tuple:
        return (self.url, self.name, self.timeout)

    def _connect(self) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self.url, connect_timeout=max(1, int(self.timeout)))
        except psycopg.Error as exc:
            raise TransientStoreError(
                f"cannot connect to the ledger database {redact(self.url)}: {str(exc).strip()}"
            ) from None
        with conn.cursor() as cur:
            # a charge waits for the lock row at most `timeout`; the lock is never held long
            cur.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
            cur.execute("SET idle_in_transaction_session_timeout = 600000")
        conn.commit()
        return conn

    def _begin(self, cur: Any, write: bool, init: bool) -> None:
        if init:  # the tables may not exist yet: a lock on the ledger's name instead
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"noiseforge:{self.name}",))
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.name,))
            if cur.fetchone() is None:  # only creating needs CREATE on the database
                cur.execute(f'CREATE SCHEMA "{self.name}"')
        elif write:
            cur.execute(self.sql("SELECT value FROM {meta} WHERE key = 'lock' FOR UPDATE"))
            if cur.fetchone() is None:
                raise LedgerCorruptError(
                    f"{self.describe()}: table nf_meta lost its lock row, which serialises "
                    "charges; nothing was charged. Restore the store from a backup"
                )
        else:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def _commit(self, conn: Any, cur: Any) -> None:
        conn.commit()

    def _rollback(self, conn: Any, cur: Any) -> None:
        try:
            conn.rollback()
        except Exception:
            self._conn = None  # a broken connection: open a new one next time

    def _tables(self) -> dict[str, str]:
        s = self.name
        return {
            "meta": f'"{s}".nf_meta',
            "releases": f'"{s}".nf_releases',
            "entries": f'"{s}".nf_entries',
            "spans": f'"{s}".nf_spans',
        }

    def existing_tables(self, tx: Transaction) -> set[str]:
        return {
            r[0]
            for r in tx.rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                (self.name,),
            )
        }

    def foreign_objects(self, tx: Transaction) -> list[str]:
        """Triggers and rules on the ledger's tables (see SQLiteStore.foreign_objects)."""
        triggers = tx.rows(
            "SELECT 'trigger ' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ? "
            "AND NOT t.tgisinternal",
            (self.name,),
        )
        rules = tx.rows(
            "SELECT 'rule ' || rulename FROM pg_rules WHERE schemaname = ?", (self.name,)
        )
        return [r[0] for r in triggers + rules]

    def _create(self, tx: Transaction) -> None:
        for ddl in (
            "CREATE TABLE {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE {releases} (release_id TEXT PRIMARY KEY, "
            "key_fingerprint TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE {entries} (seq BIGSERIAL PRIMARY KEY, "
            "release_id TEXT NOT NULL, batch TEXT NOT NULL, epsilon DOUBLE PRECISION NOT NULL, "
            "delta DOUBLE PRECISION NOT NULL, mechanism TEXT NOT NULL, note TEXT NOT NULL, "
            "time DOUBLE PRECISION NOT NULL, n_records BIGINT NOT NULL, records BYTEA NOT NULL, "
            "request TEXT NOT NULL, output_digest TEXT, origin TEXT NOT NULL, "
            "UNIQUE (release_id, batch))",
            "CREATE TABLE {spans} (lo BIGINT PRIMARY KEY, hi BIGINT NOT NULL, "
            "epsilon DOUBLE PRECISION NOT NULL, delta DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX ON {releases} (key_fingerprint)",
        ):
            tx.execute(ddl)

    def insert_returning_seq(self, tx: Transaction, sql: str, values: Sequence[Any]) -> int:
        return int(tx.execute(sql + " RETURNING seq", values).fetchone()[0])

    def write_spans(self, tx: Transaction, gone: np.ndarray, rows: Spans) -> None:
        if len(gone) + len(rows) < 2048:
            return super().write_spans(tx, gone, rows)
        # Bulk: binary COPY into session temp tables, then two set-based statements
        # (executemany costs a round trip's worth of work per row).
        tx.execute("CREATE TEMP TABLE IF NOT EXISTS nf_gone (lo BIGINT) ON COMMIT DELETE ROWS")
        tx.execute(
            "CREATE TEMP TABLE IF NOT EXISTS nf_new (lo BIGINT, hi BIGINT, "
            "epsilon DOUBLE PRECISION, delta DOUBLE PRECISION) ON COMMIT DELETE ROWS"
        )
        if len(gone):
            with tx.cur.copy("COPY nf_gone FROM STDIN (FORMAT binary)") as copy:
                copy.write(_pg_binary_rows([gone.astype(">i8")]))
            tx.execute("DELETE FROM {spans} s USING nf_gone g WHERE s.lo = g.lo")
        if len(rows):
            cols = [
                rows.lo.astype(">i8"),
                rows.hi.astype(">i8"),
                rows.epsilon.astype(">f8"),
                rows.delta.astype(">f8"),
            ]
            with tx.cur.copy("COPY nf_new FROM STDIN (FORMAT binary)") as copy:
                copy.write(_pg_binary_rows(cols))
            tx.execute(
                "INSERT INTO {spans} (lo, hi, epsilon, delta) SELECT * FROM nf_new" + UPSERT_SPANS
            )

    def _translate_error(self, exc: Exception) -> Exception | None:
        import psycopg

        if not isinstance(exc, psycopg.Error):
            return None
        text = str(exc).strip()
        where = self.describe()
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return LedgerBusyError(
                f"{where}: another client held the ledger's lock for more than "
                f"{self.timeout:g} s; nothing was charged. Retry, or raise timeout="
            )
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            self._conn = None  # reconnect on the next transaction
            return TransientStoreError(f"{where}: the connection failed ({text})")
        if isinstance(exc, psycopg.IntegrityError):
            return LedgerCorruptError(
                f"{where}: the store refused a write its schema allows ({text}): its schema "
                "was changed outside noiseforge; nothing was charged. Restore the ledger"
            )
        return LedgerStoreError(
            f"{where}: the ledger could not complete the transaction ({text}); nothing was "
            "charged and the ledger is unchanged"
        )
