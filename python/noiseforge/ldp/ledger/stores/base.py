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
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from noiseforge.ldp.ledger.spending import Spans, diff

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

    def replace_spans(self, old: Spans, new: Spans) -> None:
        """Replace the spans ``old`` (as read) by ``new``: rows that did not change
        are not touched, changed ones are upserted, vanished ones deleted."""
        gone, changed = diff(old, new)
        self.store.write_spans(self, gone, changed)


# The upsert of span rows; what precedes it supplies the rows (VALUES or a SELECT).
UPSERT_SPANS = (
    " ON CONFLICT (lo) DO UPDATE SET hi = excluded.hi, epsilon = excluded.epsilon, "
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

    def write_spans(self, tx: Transaction, gone: np.ndarray, rows: Spans) -> None:
        """Delete the spans starting at ``gone`` and upsert ``rows``."""
        if len(gone):
            tx.cur.executemany(
                self.sql("DELETE FROM {spans} WHERE lo = ?"), [(v,) for v in gone.tolist()]
            )
        if len(rows):
            tx.cur.executemany(
                self.sql("INSERT INTO {spans} (lo, hi, epsilon, delta) VALUES (?, ?, ?, ?)")
                + UPSERT_SPANS,
                rows.rows(),
            )

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
