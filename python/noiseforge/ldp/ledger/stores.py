"""Where the privacy ledger keeps its state: SQLite on one machine, PostgreSQL for many.

Both stores hold the same four tables and give the ledger the same contract:

* ``write()`` is one exclusive transaction -- SQLite ``BEGIN IMMEDIATE`` (one
  writer per database file, across threads and processes), PostgreSQL a row
  lock on the ledger's ``lock`` row (one writer per ledger, across hosts) --
  that commits when the block ends and rolls back on any exception, so a
  failed write changes nothing;
* commits are durable before they are acknowledged (SQLite WAL with
  ``synchronous=FULL``; PostgreSQL's default ``synchronous_commit``);
* nothing is cached in memory: every call reads the store.

Tables (``nf_`` prefix; in PostgreSQL inside one schema per ledger):

``nf_meta``      key/value: schema version, the budget, the lock row
``nf_releases``  one row per release id: the fingerprint of its noise key
``nf_entries``   one row per charged batch: cost, mechanism, the record set
                 (compact ranges), the idempotency key ``(release_id, batch)``,
                 the digest of what was released and who charged it (user@host, pid)
``nf_spans``     per-record totals as disjoint id ranges (see ``spending``)

The store only moves rows; the ledger validates every row it reads.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

SCHEMA_VERSION = "1"
SQLITE_MAGIC = b"SQLite format 3\x00"

# Kept alive on purpose: a PostgreSQL connection inherited through fork shares
# its socket with the parent, and closing it in the child would end the
# parent's session. The child opens its own and never touches these.
_inherited_connections: list[Any] = []
_stores: weakref.WeakSet[SQLStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would never be released in the
    # child: every store gets a fresh one (and opens its own connection, see
    # SQLStore.connection).
    for store in list(_stores):
        store._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LedgerStoreError(RuntimeError):
    """The store could not be read or written; nothing was charged."""


class LedgerBusyError(LedgerStoreError):
    """Another process held the ledger's write lock for longer than the timeout."""


class TransientStoreError(LedgerStoreError):
    """The connection to the store broke; the same transaction may be retried."""


class LedgerCorruptError(ValueError):
    """A row of the store is not a valid ledger row (the message says where)."""


def is_postgres_url(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


class Transaction:
    """The row operations of one transaction (dialect-neutral; ``?`` placeholders)."""

    def __init__(self, store: SQLStore, cursor: Any) -> None:
        self.store = store
        self.cur = cursor

    def _q(self, sql: str) -> str:
        return self.store.sql(sql)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cur.execute(self._q(sql), tuple(params))
        return self.cur

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return list(self.execute(sql, params).fetchall())

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, Any]:
        return {k: v for k, v in self.rows("SELECT key, value FROM {meta}")}

    def set_meta(self, items: dict[str, str]) -> None:
        for key, value in items.items():
            self.execute("INSERT INTO {meta} (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ releases
    def release_fingerprint(self, release_id: str) -> Any:
        rows = self.rows(
            "SELECT key_fingerprint FROM {releases} WHERE release_id = ?", (release_id,)
        )
        return rows[0][0] if rows else None

    def release_of_key(self, fingerprint: str) -> Any:
        rows = self.rows(
            "SELECT release_id FROM {releases} WHERE key_fingerprint = ? LIMIT 1", (fingerprint,)
        )
        return rows[0][0] if rows else None

    def add_release(self, release_id: str, fingerprint: str, created: float) -> None:
        self.execute(
            "INSERT INTO {releases} (release_id, key_fingerprint, created) VALUES (?, ?, ?)",
            (release_id, fingerprint, created),
        )

    # ------------------------------------------------------------------ entries
    ENTRY_COLUMNS = (
        "seq, release_id, batch, epsilon, delta, mechanism, note, time, n_records, records, "
        "request, output_digest, origin"
    )

    def entry(self, release_id: str, batch: str) -> tuple | None:
        rows = self.rows(
            f"SELECT {self.ENTRY_COLUMNS} FROM {{entries}} WHERE release_id = ? AND batch = ?",
            (release_id, batch),
        )
        return rows[0] if rows else None

    def entries(self, release_id: str | None = None) -> list[tuple]:
        if release_id is None:
            return self.rows(f"SELECT {self.ENTRY_COLUMNS} FROM {{entries}} ORDER BY seq")
        return self.rows(
            f"SELECT {self.ENTRY_COLUMNS} FROM {{entries}} WHERE release_id = ? ORDER BY seq",
            (release_id,),
        )

    def count_entries(self) -> int:
        return int(self.rows("SELECT count(*) FROM {entries}")[0][0])

    def insert_entry(self, values: Sequence[Any]) -> int:
        cols = self.ENTRY_COLUMNS.split(", ", 1)[1]
        marks = ", ".join("?" * len(values))
        return self.store.insert_returning_seq(
            self, f"INSERT INTO {{entries}} ({cols}) VALUES ({marks})", values
        )

    def set_output_digest(self, seq: int, digest: str) -> Any:
        """Record ``digest`` if none is recorded yet; returns the digest now recorded."""
        self.execute(
            "UPDATE {entries} SET output_digest = ? WHERE seq = ? AND output_digest IS NULL",
            (digest, seq),
        )
        rows = self.rows("SELECT output_digest FROM {entries} WHERE seq = ?", (seq,))
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ spans
    SPAN_COLUMNS = "lo, hi, epsilon, delta"

    def span_at(self, record: int) -> tuple | None:
        """The span with the largest ``lo <= record`` (it holds ``record`` only if its
        ``hi >= record``: the caller checks, after validating the row)."""
        rows = self.rows(
            f"SELECT {self.SPAN_COLUMNS} FROM {{spans}} WHERE lo <= ? ORDER BY lo DESC LIMIT 1",
            (record,),
        )
        return rows[0] if rows else None

    def all_spans(self) -> list[tuple]:
        return self.rows(f"SELECT {self.SPAN_COLUMNS} FROM {{spans}} ORDER BY lo")

    def spans_touching(self, ranges: np.ndarray) -> list[tuple]:
        """Every span overlapping or adjacent to a range ``[a, b]`` (i.e. meeting
        ``[a - 1, b + 1]``), sorted by ``lo``, each once.

        A few ranges are looked up one by one (two index probes each); many ranges
        take the spans of their whole window ``[first a - 1, last b + 1]`` in one
        index scan, which may include spans between the ranges that are then left as
        they are (see :meth:`replace_spans`).
        """
        found: dict[int, tuple] = {}
        ranges = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
        if len(ranges) > 16:
            ranges = np.array([[ranges[0, 0], ranges[-1, 1]]])  # the window [first a, last b]
        for a, b in ranges.tolist():
            for row in self.rows(
                f"SELECT {self.SPAN_COLUMNS} FROM {{spans}} WHERE lo BETWEEN ? AND ? ORDER BY lo",
                (a - 1, b + 1),
            ):
                found[row[0]] = row
            before = self.span_at(a - 1)
            if before is not None:
                found[before[0]] = before
        return [found[k] for k in sorted(found)]

    def replace_spans(self, old: Any, new: Any) -> None:
        """Replace the spans ``old`` (as read) by ``new``: rows that did not change
        are not touched, changed ones are upserted, vanished ones deleted."""
        # both are sorted by lo: match rows by lo, then compare the rest
        at = np.searchsorted(old.lo, new.lo)
        at_ok = np.minimum(at, max(len(old) - 1, 0))
        same = (
            (
                (at < len(old))
                & (old.lo[at_ok] == new.lo)
                & (old.hi[at_ok] == new.hi)
                & (old.epsilon[at_ok] == new.epsilon)
                & (old.delta[at_ok] == new.delta)
            )
            if len(old)
            else np.zeros(len(new), bool)
        )
        keep = ~same
        changed = np.rec.fromarrays(
            [new.lo[keep], new.hi[keep], new.epsilon[keep], new.delta[keep]], names="lo,hi,e,d"
        )
        gone = old.lo[~np.isin(old.lo, new.lo, assume_unique=True)]
        self.store.write_spans(self, gone, changed)


def _upsert_sql() -> str:
    return (
        "INSERT INTO {spans} (lo, hi, epsilon, delta) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (lo) DO UPDATE SET hi = excluded.hi, epsilon = excluded.epsilon, "
        "delta = excluded.delta"
    )


class SQLStore:
    """What the SQLite and PostgreSQL stores share; subclasses set the dialect."""

    kind = "sql"
    placeholder = "?"

    timeout = 60.0

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = -1
        _stores.add(self)

    # subclass hooks ---------------------------------------------------------
    def describe(self) -> str:
        raise NotImplementedError

    def reopen_spec(self) -> tuple:
        raise NotImplementedError

    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, cur: Any, write: bool, init: bool) -> None:
        raise NotImplementedError

    def _tables(self) -> dict[str, str]:
        raise NotImplementedError

    def _create(self, tx: Transaction) -> None:
        raise NotImplementedError

    def foreign_objects(self, tx: Transaction) -> list[str]:
        raise NotImplementedError

    def _translate_error(self, exc: Exception) -> Exception | None:
        return None

    def insert_returning_seq(self, tx: Transaction, sql: str, values: Sequence[Any]) -> int:
        raise NotImplementedError

    def write_spans(self, tx: Transaction, gone: np.ndarray, rows: np.recarray) -> None:
        """Delete the spans starting at ``gone`` and upsert ``rows`` (lo, hi, e, d)."""
        if len(gone):
            tx.cur.executemany(
                self.sql("DELETE FROM {spans} WHERE lo = ?"), [(v,) for v in gone.tolist()]
            )
        if len(rows):
            tx.cur.executemany(self.sql(_upsert_sql()), rows.tolist())

    # shared -----------------------------------------------------------------
    def sql(self, text: str) -> str:
        text = text.format(**self._tables())
        return text.replace("?", self.placeholder) if self.placeholder != "?" else text

    def connection(self) -> Any:
        if self._conn is None or self._pid != os.getpid():
            if self._conn is not None:
                _inherited_connections.append(self._conn)
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    @contextlib.contextmanager
    def transaction(self, *, write: bool, init: bool = False) -> Iterator[Transaction]:
        """One transaction: exclusive when ``write`` (``init``: also before the tables
        exist); commits at the end of the block, rolls back (and re-raises, translated)
        on any exception."""
        # Threads of one process share the connection: they queue here, each for at
        # most `timeout` (then the store's own lock wait, also bounded by it).
        if not self._lock.acquire(timeout=self.timeout):
            raise LedgerBusyError(
                f"{self.describe()}: another thread of this process held the ledger for more "
                f"than {self.timeout:g} s; nothing was charged. Retry, or raise timeout="
            )
        try:
            conn = cur = None
            try:
                conn = self.connection()
                cur = conn.cursor()
                self._begin(cur, write, init)
            except Exception as exc:
                if cur is not None:  # e.g. a lock timeout: leave no aborted transaction behind
                    self._rollback(conn, cur)
                raise self._translated(exc) from exc
            try:
                yield Transaction(self, cur)
                self._commit(conn, cur)
            except BaseException as exc:
                self._rollback(conn, cur)
                translated = self._translate_error(exc) if isinstance(exc, Exception) else None
                if translated is not None:
                    raise translated from exc
                raise
        finally:
            self._lock.release()

    def _translated(self, exc: Exception) -> Exception:
        return self._translate_error(exc) or exc

    def _commit(self, conn: Any, cur: Any) -> None:
        cur.execute("COMMIT")

    def _rollback(self, conn: Any, cur: Any) -> None:
        # the transaction may already be gone (SQLite ends it on an I/O error)
        with contextlib.suppress(Exception):
            cur.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn = None


# --------------------------------------------------------------------------- SQLite


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


# --------------------------------------------------------------------------- PostgreSQL


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

    def write_spans(self, tx: Transaction, gone: np.ndarray, rows: np.recarray) -> None:
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
                rows.e.astype(">f8"),
                rows.d.astype(">f8"),
            ]
            with tx.cur.copy("COPY nf_new FROM STDIN (FORMAT binary)") as copy:
                copy.write(_pg_binary_rows(cols))
            tx.execute(_upsert_sql().replace("VALUES (?, ?, ?, ?)", "SELECT * FROM nf_new"))

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
