"""The privacy ledger: what each private record has spent, and a hard budget.

Every release of a record with eps-LDP noise (layer 1 of LDPKiT) is charged
here; post-processing of released data (layer 2: more noise, mixing, querying
the cloud, training) is free and is never charged. Spending composes by basic
composition: a record released with (eps_1, delta_1), ..., (eps_n, delta_n)
has spent (sum eps_i, sum delta_i), summed conservatively (see
:mod:`noiseforge.ldp.spending`).

What the ledger guarantees, for any number of threads and processes sharing
one store (SQLite file on one machine, PostgreSQL database across machines):

* **A charge is one transaction.** It checks every record's total against the
  budget and writes the entry and the new totals, or refuses the whole charge
  (BudgetExceededError) and writes nothing. Charges are serialised by the
  store's lock, so concurrent charges can never together take a record past
  its budget. Nothing is held in memory: every answer is read from the store.
* **A failed write charges nothing.** A full disk, a lost connection or a
  killed process before the commit leaves the store as it was; an error is
  raised, never a charge in memory only.
* **Retries are charged once.** Every charge carries an idempotency key
  ``(release_id, batch)``. Repeating the same charge returns the stored entry
  (``replayed=True``) instead of charging again; the same key with other
  records or another cost is refused (IdempotencyConflictError).
* **What it reads back is checked.** Every row is validated (finite,
  non-negative costs, integer record ranges, a known mechanism); a bad one
  stops with its location (LedgerCorruptError), it is never skipped or
  repaired silently. :meth:`PrivacyLedger.verify` re-derives every record's
  total from the entries and compares.

The ledger does not protect against someone with write access to the store
itself (who can simply delete rows): it protects a team's budget from its
own code, concurrency, retries and failures.
"""

from __future__ import annotations

import os
import re
import time
import uuid
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from noiseforge._common.validation import is_int
from noiseforge.ldp.ledger import spending
from noiseforge.ldp.ledger.errors import (
    BudgetExceededError,
    IdempotencyConflictError,
    LedgerCorruptError,
    ReleaseConflictError,
)
from noiseforge.ldp.ledger.journal import import_journal
from noiseforge.ldp.ledger.records import MAX_RECORD, RecordSet
from noiseforge.ldp.ledger.rows import (
    MECHANISMS,
    LedgerAudit,
    Release,
    RowChecker,
    check_budget,
    check_cost,
    check_name,
    check_note,
    origin,
    request_digest,
)
from noiseforge.ldp.ledger.stores import (
    SCHEMA_VERSION,
    SQLITE_MAGIC,
    PostgresStore,
    SQLiteStore,
    SQLStore,
    Transaction,
    TransientStoreError,
    is_postgres_url,
)

# "host=... dbname=..." -- libpq's other connection-string form, which is not a path
_LIBPQ_KEYWORDS = re.compile(
    r"^\s*(host|hostaddr|port|dbname|user|password|service|sslmode)\s*=", re.IGNORECASE
)


class PrivacyLedger:
    """Per-record privacy accounting with a hard budget, shared safely by many processes.

    Parameters
    ----------
    epsilon_budget:
        Largest total epsilon any record may spend (> 0; ``math.inf`` for no
        limit). Needed to create a ledger; when opening an existing one it may
        be omitted (the stored budget is used) or must equal the stored one.
    delta_budget:
        Largest total delta (0 -- the default for a new ledger -- allows only
        pure-DP mechanisms).
    path:
        Where the ledger lives: ``None`` (this process only, in memory), a file
        path (SQLite; any number of threads and processes on one machine), or a
        ``postgresql://`` URL (several machines). A path to a JSON-lines
        journal of an earlier noiseforge version is imported once, after
        validation, into an SQLite file beside it (``ledger.jsonl`` ->
        ``ledger.sqlite``), which is the ledger from then on.
    name:
        PostgreSQL only: the schema that holds this ledger (several ledgers can
        share a database).
    timeout:
        Seconds a charge waits for another writer's lock before raising.

    A ledger pickles as a handle that reconnects by path or URL, so worker
    processes (multiprocessing, Ray, Dask) charge the same budget.
    """

    def __init__(
        self,
        epsilon_budget: float | None = None,
        delta_budget: float | None = None,
        path: str | os.PathLike | None = None,
        *,
        name: str = "noiseforge",
        timeout: float = 60.0,
    ) -> None:
        if epsilon_budget is not None:
            epsilon_budget = check_budget("epsilon_budget", epsilon_budget, delta=False)
        if delta_budget is not None:
            delta_budget = check_budget("delta_budget", delta_budget, delta=True)
        if isinstance(timeout, bool) or not (
            isinstance(timeout, int | float) and 0.001 <= timeout <= 86400
        ):
            raise ValueError(
                f"timeout must be a number of seconds in [0.001, 86400], got {timeout!r}"
            )
        journal = None
        if isinstance(path, str) and _LIBPQ_KEYWORDS.match(path):
            raise ValueError(
                "path looks like a libpq connection string (key=value ...); give the "
                "PostgreSQL ledger as a URL: postgresql://user:password@host:5432/dbname"
            )
        if path is not None and is_postgres_url(str(path)):
            self._store: SQLStore = PostgresStore(str(path), name=name, timeout=timeout)
        else:
            sqlite_path, journal = _sqlite_target(path)
            if sqlite_path is not None and not sqlite_path.exists() and epsilon_budget is None:
                raise FileNotFoundError(
                    f"there is no ledger at {sqlite_path}; give epsilon_budget= (and "
                    "delta_budget=) to create one"
                )
            self._store = SQLiteStore(sqlite_path, timeout=timeout)
        self.epsilon_budget, self.delta_budget = self._open(epsilon_budget, delta_budget)
        self._rows = RowChecker(self._store.describe(), self.epsilon_budget, self.delta_budget)
        if journal is not None:
            self._import_once(journal)

    # ------------------------------------------------------------------ opening
    def _open(self, eps: float | None, delta: float | None) -> tuple[float, float]:
        where = self._store.describe()
        with self._store.transaction(write=True, init=True) as tx:
            tables = self._store.existing_tables(tx)
            ours = {"nf_meta", "nf_releases", "nf_entries", "nf_spans"}
            if not tables & ours:
                if eps is None:
                    raise ValueError(
                        f"{where} holds no ledger yet: give epsilon_budget= (and delta_budget=) "
                        "to create one"
                    )
                if tables:
                    raise ValueError(
                        f"{where} already holds other tables ({', '.join(sorted(tables)[:5])}) "
                        "and no ledger; give the ledger its own file (or schema name)"
                    )
                self._store._create(tx)
                d = 0.0 if delta is None else delta
                tx.set_meta(
                    {
                        "schema": SCHEMA_VERSION,
                        "epsilon_budget": eps.hex(),
                        "delta_budget": d.hex(),
                        "created": repr(time.time()),
                        "lock": "the row charges lock",
                    }
                )
                return eps, d
            if tables & ours != ours:
                raise LedgerCorruptError(
                    f"{where}: the ledger's tables are incomplete (found {sorted(tables & ours)}); "
                    "restore the store from a backup"
                )
            self._refuse_foreign_objects(tx)
            stored_eps, stored_delta = self._read_budget(tx)
        for given, stored, label in ((eps, stored_eps, "epsilon"), (delta, stored_delta, "delta")):
            if given is not None and given != stored:
                raise ValueError(
                    f"{where} was created with {label}_budget={stored!r}, not {given!r}; a "
                    "shared ledger has one budget: omit the budget to use the stored one, or "
                    "use a new ledger for another budget"
                )
        return stored_eps, stored_delta

    def _refuse_foreign_objects(self, tx: Transaction) -> None:
        foreign = self._store.foreign_objects(tx)
        if foreign:
            raise LedgerCorruptError(
                f"{self._store.describe()}: the ledger's schema holds objects noiseforge did "
                f"not create ({', '.join(foreign[:5])}); a trigger or rule can make a charge "
                "skip its totals. Remove them, or restore the store from a backup"
            )

    def _read_budget(self, tx: Transaction) -> tuple[float, float]:
        where = self._store.describe()
        meta = tx.meta()
        if meta.get("schema") != SCHEMA_VERSION:
            raise LedgerCorruptError(
                f"{where}: ledger schema {meta.get('schema')!r}, this noiseforge reads schema "
                f"{SCHEMA_VERSION!r}; upgrade noiseforge or restore the store"
            )
        try:
            eps = float.fromhex(meta["epsilon_budget"])
            delta = float.fromhex(meta["delta_budget"])
            check_budget("epsilon_budget", eps, delta=False)
            check_budget("delta_budget", delta, delta=True)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise LedgerCorruptError(
                f"{where}: table nf_meta holds no valid budget ({exc}); restore the store"
            ) from None
        if "lock" not in meta:
            raise LedgerCorruptError(f"{where}: table nf_meta lost its lock row; restore the store")
        return eps, delta

    # ------------------------------------------------------------------ pickling
    def __reduce__(self):
        return (_reopen, self._store.reopen_spec())

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(epsilon_budget={self.epsilon_budget!r}, "
            f"delta_budget={self.delta_budget!r}, store={self._store.describe()!r})"
        )

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this process's connection (the ledger reconnects if used again)."""
        self._store.close()

    @property
    def location(self) -> str:
        """The store, as shown in messages (a path, or a URL without its password)."""
        return self._store.describe()

    # ------------------------------------------------------------------ queries
    def spent(self, record: int) -> tuple[float, float]:
        """(epsilon, delta) spent so far by ``record`` (an upper bound of the exact sums)."""
        r = _one_record(record)
        with self._store.transaction(write=False) as tx:
            row = tx.span_at(r)
        if row is None:
            return 0.0, 0.0
        _, hi, eps, delta = self._rows.span(row)
        return (eps, delta) if hi >= r else (0.0, 0.0)

    def spent_many(self, records: Any) -> tuple[np.ndarray, np.ndarray]:
        """(N,) float64 epsilon and delta spent by each of ``records`` (ids, any order)."""
        ids = np.asarray(records).reshape(-1)
        rs = RecordSet.from_ids(np.unique(ids) if ids.size else ids)
        with self._store.transaction(write=False) as tx:
            rows = tx.spans_touching(rs.ranges) if len(rs) else []
        eps, delta, _ = self._rows.spans(rows).totals_at(ids.astype(np.int64))
        return eps, delta

    def remaining(self, record: int) -> tuple[float, float]:
        """(epsilon, delta) ``record`` may still spend: rounded down, so that a charge
        of exactly this much is always accepted."""
        eps, delta = self.spent(record)
        return (
            spending.subtract_rounding_down(self.epsilon_budget, eps),
            spending.subtract_rounding_down(self.delta_budget, delta),
        )

    @property
    def releases(self) -> list[Release]:
        """Every charged batch, oldest first (read from the store and validated)."""
        return self.entries()

    def entries(self, release_id: str | None = None) -> list[Release]:
        """The charged batches, oldest first; only those of ``release_id`` if given."""
        with self._store.transaction(write=False) as tx:
            rows = tx.entries(release_id)
        return [self._rows.entry(r) for r in rows]

    def entry(self, release_id: str, batch: str) -> Release | None:
        """The charged batch ``(release_id, batch)``, or None when nothing was charged
        under those names: one indexed lookup (the names are unique in the store),
        for workers that check many batches of one release."""
        if not isinstance(release_id, str) or not isinstance(batch, str):
            raise TypeError("release_id and batch must be strings")
        with self._store.transaction(write=False) as tx:
            row = tx.entry(release_id, batch)
        return None if row is None else self._rows.entry(row)

    def verify(self) -> LedgerAudit:
        """Check every row of the store and that each record's stored total equals
        the total re-derived from the entries; raises LedgerCorruptError naming the
        first problem."""
        with self._store.transaction(write=False) as tx:
            self._read_budget(tx)
            self._refuse_foreign_objects(tx)
            entry_rows = tx.entries()
            span_rows = tx.all_spans()
        entries = [self._rows.entry(r) for r in entry_rows]
        stored = self._rows.spans(span_rows)
        derived = spending.replay([(e.records.ranges, e.epsilon, e.delta) for e in entries])
        if stored.rows() != derived.rows():
            first = _first_difference(stored, derived)
            raise LedgerCorruptError(
                f"{self._store.describe()}: the totals of table nf_spans disagree with the "
                f"entries of table nf_entries ({first}); the store was edited outside "
                "noiseforge: restore it from a backup"
            )
        sizes = (stored.hi - stored.lo + 1) if len(stored) else np.zeros(0, np.int64)
        return LedgerAudit(
            entries=len(entries),
            spans=len(stored),
            records_charged=int(sizes.sum()),
            max_epsilon=float(stored.epsilon.max()) if len(stored) else 0.0,
            max_delta=float(stored.delta.max()) if len(stored) else 0.0,
        )

    # ------------------------------------------------------------------ charging
    def charge(
        self,
        records: Any,
        epsilon: float,
        delta: float = 0.0,
        *,
        mechanism: str = "other",
        note: str = "",
        release_id: str | None = None,
        batch: str | None = None,
        key_fingerprint: str = "",
    ) -> Release:
        """Charge every record in ``records`` (epsilon, delta), or refuse all of them.

        One transaction checks each record's total against the budget and
        writes the entry and the new totals; concurrent charges from any
        process are serialised. ``release_id`` and ``batch`` form the
        idempotency key (defaults: a new random release id; the digest of the
        record set): the same charge made again -- a retry -- returns the
        stored entry with ``replayed=True`` and charges nothing.
        ``key_fingerprint`` names the noise key of the release (see
        :func:`noiseforge.ldp.release`); every batch of a release must use the
        same one.

        Raises
        ------
        BudgetExceededError
            A record would exceed the budget; names it. Nothing is charged.
        IdempotencyConflictError
            ``(release_id, batch)`` was charged before for other records or cost.
        ReleaseConflictError
            ``release_id`` was started with another noise key.
        TypeError, ValueError
            Non-integer or negative ids, an id twice, a NaN/negative/boolean cost,
            an unknown mechanism.
        LedgerStoreError
            The store could not be written (disk full, lost connection, lock
            timeout); nothing was charged.
        """
        rs = records if isinstance(records, RecordSet) else RecordSet.from_ids(records)
        epsilon = check_cost("epsilon", epsilon)
        delta = check_cost("delta", delta)
        if mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {sorted(MECHANISMS)}, got {mechanism!r}")
        note = check_note(note)
        if not isinstance(key_fingerprint, str):
            raise TypeError("key_fingerprint must be a string")
        release_id = check_name("release_id", release_id) or uuid.uuid4().hex
        batch = check_name("batch", batch) or rs.digest()
        request = request_digest(rs, epsilon, delta, mechanism)
        args = (rs, epsilon, delta, mechanism, note, release_id, batch, key_fingerprint, request)
        for attempt in range(4):
            try:
                return self._charge_once(*args)
            except TransientStoreError:
                # The commit may or may not have happened: retrying under the same
                # idempotency key either finds the entry or charges it now.
                if attempt == 3:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def _charge_once(
        self,
        rs: RecordSet,
        epsilon: float,
        delta: float,
        mechanism: str,
        note: str,
        release_id: str,
        batch: str,
        key_fingerprint: str,
        request: str,
    ) -> Release:
        with self._store.transaction(write=True) as tx:
            row = tx.entry(release_id, batch)
            if row is not None:
                entry = self._rows.entry(row)
                key_now = tx.release_fingerprint(release_id)
                if entry.request == request and key_now == key_fingerprint:
                    return replace(entry, replayed=True)
                raise IdempotencyConflictError(
                    f"batch {batch!r} of release {release_id!r} was already charged (entry "
                    f"{entry.seq}: {len(entry.records)} records at epsilon={entry.epsilon:.6g}, "
                    f"delta={entry.delta:.3g}, {entry.mechanism}"
                    + (", another noise key" if key_now != key_fingerprint else "")
                    + "); a retry must repeat the same charge. Use a new batch or release id "
                    "for a different charge"
                )
            stored_key = tx.release_fingerprint(release_id)
            if stored_key is None:
                other = tx.release_of_key(key_fingerprint) if key_fingerprint else None
                if other is not None:
                    raise ReleaseConflictError(
                        f"this noise key already belongs to release {other!r}; a key serves "
                        f"one release (release {release_id!r} would redraw that release's "
                        "noise on its records). Create a new ReleaseKey() for a new release"
                    )
                tx.add_release(release_id, key_fingerprint, time.time())
            elif stored_key != key_fingerprint:
                raise ReleaseConflictError(
                    f"release {release_id!r} was started with another noise key; every batch "
                    "of a release draws from its key. Pass the release's key (see "
                    "noiseforge.ldp.ReleaseKey) or start a new release id"
                )
            over = self._apply(tx, rs, epsilon, delta)
            if over is not None:
                raise BudgetExceededError(
                    f"record {over.record} has spent epsilon={over.spent_epsilon:.6g}, "
                    f"delta={over.spent_delta:.3g}; releasing it again at "
                    f"epsilon={epsilon:.6g}, delta={delta:.3g} would exceed the budget "
                    f"({self.epsilon_budget:.6g}, {self.delta_budget:.3g}), so nothing was "
                    "charged. Reuse the released (noised) data instead: post-processing "
                    "is free"
                )
            when, who = time.time(), origin()
            seq = tx.insert_entry(
                (
                    release_id,
                    batch,
                    epsilon,
                    delta,
                    mechanism,
                    note,
                    when,
                    len(rs),
                    rs.to_bytes(),
                    request,
                    None,
                    who,
                )
            )
        return Release(
            release_id,
            batch,
            rs,
            epsilon,
            delta,
            mechanism,
            note,
            when,
            seq,
            origin=who,
            request=request,
        )

    def _apply(
        self, tx: Transaction, rs: RecordSet, epsilon: float, delta: float
    ) -> spending.Overdraft | None:
        """Inside ``tx``: write the totals after charging ``rs``, or return the first
        overdraft and write nothing."""
        if not len(rs):
            return None
        spans = self._rows.spans(tx.spans_touching(rs.ranges))
        new, over = spending.apply_charge(
            spans, rs.ranges, epsilon, delta, self.epsilon_budget, self.delta_budget
        )
        if over is None:
            tx.replace_spans(spans, new)
        return over

    def record_output(self, entry: Release, digest: str) -> None:
        """Bind ``entry`` to the digest of the data it released (done by
        :func:`~noiseforge.ldp.release` before the data is returned).

        The first attempt records its digest; a retry that produced other data
        (the private inputs changed between attempts, another backend) raises
        ReleaseConflictError and its data must not be used.
        """
        if not (isinstance(digest, str) and len(digest) == 64):
            raise ValueError("digest must be a sha256 hex digest")
        for attempt in range(4):
            try:
                with self._store.transaction(write=True) as tx:
                    now = tx.set_output_digest(entry.seq, digest)
                break
            except TransientStoreError:
                if attempt == 3:
                    raise
                time.sleep(0.05 * 2**attempt)
        if now != digest:
            raise ReleaseConflictError(
                f"batch {entry.batch!r} of release {entry.release_id!r} was released before "
                "with other data: the private inputs (or the noise settings, or the backend) "
                "changed between attempts. Nothing from this attempt was returned; release "
                "changed data under a new release id (it is charged again)"
            )

    # ------------------------------------------------------------------ journals
    def import_journal(self, path: str | os.PathLike) -> int:
        """Import a JSON-lines journal of an earlier noiseforge version, once (see
        :func:`noiseforge.ldp.ledger.journal.import_journal`); returns the number
        of entries imported."""
        return import_journal(self, path)

    def _import_once(self, journal: Path) -> None:
        imported = self.import_journal(journal)
        if imported:
            warnings.warn(
                f"imported {imported} entries of the JSON-lines journal {journal} into the "
                f"SQLite ledger {self._store.describe()}, which is the ledger from now on; "
                "point PrivacyLedger at it",
                stacklevel=3,
            )


def _reopen(path: str, name: str | None, timeout: float) -> PrivacyLedger:
    kwargs: dict[str, Any] = {"timeout": timeout}
    if name is not None:
        kwargs["name"] = name
    return PrivacyLedger(path=path, **kwargs)


def _one_record(record: Any) -> int:
    if not is_int(record):
        raise TypeError(f"a record id is an integer, got {record!r}")
    if not 0 <= int(record) <= MAX_RECORD:
        raise ValueError(f"record ids lie in [0, {MAX_RECORD}], got {int(record)}")
    return int(record)


def _first_difference(a: spending.Spans, b: spending.Spans) -> str:
    for x, y in zip(a.rows(), b.rows(), strict=False):
        if x != y:
            return f"stored span {x} vs re-derived {y}"
    return f"{len(a)} stored spans vs {len(b)} re-derived"


def _sqlite_target(path: str | os.PathLike | None) -> tuple[Path | None, Path | None]:
    """(SQLite file, JSON-lines journal to import) for a ``path`` argument."""
    if path is None:
        return None, None
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(
            f"{p} is a folder; give the ledger a file path (e.g. ledger.sqlite)"
        )
    if not p.exists():
        if p.suffix in (".jsonl", ".json"):
            raise ValueError(
                f"{p}: ledgers are SQLite files (JSON-lines journals are only imported); "
                f"name the new ledger e.g. {p.with_suffix('.sqlite')}"
            )
        return p, None
    with open(p, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC or head == b"":
        return p, None
    if head.lstrip()[:1] in (b"{", b""):
        target = (
            p.with_suffix(".sqlite")
            if p.suffix in (".jsonl", ".json")
            else Path(str(p) + ".sqlite")
        )
        return target, p
    raise ValueError(f"{p} is neither an SQLite ledger nor a JSON-lines journal; give another path")
