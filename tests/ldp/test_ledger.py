"""The privacy ledger on both stores (SQLite and PostgreSQL): budgets, idempotent
charges, conservative arithmetic, validation of everything read back, journal import,
pickling. Multi-process races, kill -9 and failing writes: test_ldp_ledger_processes.py."""

from __future__ import annotations

import json
import math
import os
import pickle
import sqlite3

import numpy as np
import pytest

from noiseforge.ldp import (
    BudgetExceededError,
    IdempotencyConflictError,
    LedgerCorruptError,
    PrivacyLedger,
    RecordSet,
    ReleaseConflictError,
)
from noiseforge.ldp.ledger import JournalError
from noiseforge.ldp.ledger.spending import Spans, add_rounding_up, apply_charge, replay


def test_ledger_composes_and_refuses_over_budget_atomically(ledger_location):
    ledger = ledger_location.open(epsilon_budget=10.0)
    ledger.charge([1, 2, 3], 4.0)
    ledger.charge([2, 3], 4.0)
    assert ledger.spent(2) == (8.0, 0.0) and ledger.spent(1) == (4.0, 0.0)
    with pytest.raises(BudgetExceededError, match=r"record 2 has spent epsilon=8.*budget"):
        ledger.charge([1, 2], 4.0)
    assert ledger.spent(1) == (4.0, 0.0), "a refused release must charge nobody"
    assert len(ledger.releases) == 2
    ledger.charge([1], 6.0)  # exactly the budget is allowed
    assert ledger.remaining(1) == (0.0, 0.0)
    assert ledger.verify().entries == 3


def test_delta_budget_is_exact_and_bad_charges_are_refused(ledger_location):
    ledger = ledger_location.open(epsilon_budget=5.0, delta_budget=1e-5)
    ledger.charge([0], 1.0, 1e-6)
    with pytest.raises(BudgetExceededError):
        ledger.charge([0], 1.0, 1e-5)
    with pytest.raises(ValueError, match="listed twice"):
        ledger.charge([3, 3], 1.0)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
            ledger.charge([4], bad)
    for bad in (True, "1", None):
        with pytest.raises(TypeError):
            ledger.charge([4], bad)
    with pytest.raises(TypeError, match="integer record ids"):
        ledger.charge([1.0, 2.0], 1.0)
    with pytest.raises(TypeError, match="integer record ids"):
        ledger.charge([True], 1.0)
    with pytest.raises(ValueError, match="negative"):
        ledger.charge([-1], 1.0)
    with pytest.raises(ValueError, match="mechanism"):
        ledger.charge([4], 1.0, mechanism="laplacian")
    assert ledger.spent(4) == (0.0, 0.0) and ledger.spent(3) == (0.0, 0.0)


def test_zero_delta_budget_admits_no_delta_at_all(tmp_path):
    ledger = PrivacyLedger(epsilon_budget=1.0, path=tmp_path / "l.sqlite")
    for tiny in (1e-300, 5e-324):  # the smallest normal and subnormal deltas
        with pytest.raises(BudgetExceededError):
            ledger.charge([0], 0.5, tiny)
    assert ledger.spent(0) == (0.0, 0.0)


def test_budget_arithmetic_is_an_upper_bound_of_the_exact_sum():
    from fractions import Fraction

    rng = np.random.default_rng(0)
    total = np.zeros(1)
    exact = Fraction(0)
    for c in rng.uniform(0, 1, 2000):
        total = add_rounding_up(total, float(c))
        exact += Fraction(float(c))
        assert Fraction(float(total[0])) >= exact  # never below the exact sum
    # and above it by at most one ulp per addition (relative 2000 * 2^-52)
    assert (Fraction(float(total[0])) - exact) / exact <= 2000 * 2.0**-52
    # 0.7 + 0.2 + 0.1 exceeds 1.0 as binary floats: refused, as documented
    spans, over = Spans.empty(), None
    r = np.array([[0, 0]])
    for c in (0.7, 0.2, 0.1):
        spans, over = apply_charge(spans, r, c, 0.0, 1.0, 0.0)
    assert over is not None and over.record == 0
    # a budget that is a binary sum of the charges is met exactly
    spans = Spans.empty()
    for _ in range(8):
        spans, over = apply_charge(spans, r, 0.125, 0.0, 1.0, 0.0)
        assert over is None
    assert spans.rows() == [(0, 0, 1.0, 0.0)]


def test_spans_stay_compact_and_match_a_per_record_model():
    rng = np.random.default_rng(1)
    per_record = np.zeros(300)
    spans = Spans.empty()
    for _ in range(200):
        ids = np.unique(rng.integers(0, 300, rng.integers(1, 60)))
        if rng.random() < 0.3:
            lo = int(rng.integers(0, 250))
            ids = np.arange(lo, lo + int(rng.integers(1, 50)))
        eps = float(rng.choice([0.25, 0.5, 1.0]))
        ranges = RecordSet.from_ids(ids).ranges
        inside = (spans.hi >= ranges[0, 0] - 1) & (spans.lo <= ranges[-1, 1] + 1)
        part = Spans(spans.lo[inside], spans.hi[inside], spans.epsilon[inside], spans.delta[inside])
        merged, over = apply_charge(part, ranges, eps, 0.0, 1e9, 0.0)
        assert over is None
        keep = ~inside
        lo = np.concatenate((spans.lo[keep], merged.lo))
        order = np.argsort(lo)
        spans = Spans(
            lo[order],
            np.concatenate((spans.hi[keep], merged.hi))[order],
            np.concatenate((spans.epsilon[keep], merged.epsilon))[order],
            np.concatenate((spans.delta[keep], merged.delta))[order],
        )
        per_record[ids] += eps
        # the spans are canonical: disjoint, sorted, no equal neighbours
        assert (spans.lo[1:] > spans.hi[:-1]).all()
        touching = spans.lo[1:] == spans.hi[:-1] + 1
        assert not (touching & (spans.epsilon[1:] == spans.epsilon[:-1])).any()
        for r in rng.integers(0, 300, 20):
            assert spans.lookup(int(r))[0] == per_record[r]
    # everything charged alike collapses into one span
    ranges = np.array([[0, 299]])
    flat, _ = apply_charge(Spans.empty(), ranges, 1.0, 0.0, 9.0, 0.0)
    flat, _ = apply_charge(flat, ranges, 1.0, 0.0, 9.0, 0.0)
    assert len(flat) == 1 and flat.rows() == [(0, 299, 2.0, 0.0)]
    assert replay([(ranges, 1.0, 0.0), (ranges, 1.0, 0.0)]).rows() == flat.rows()


def test_a_million_contiguous_records_are_one_entry_and_one_span(ledger_location):
    ledger = ledger_location.open(epsilon_budget=10.0)
    entry = ledger.charge(np.arange(1_000_000), 2.0, release_id="big", batch="0")
    assert entry.records.ranges.tolist() == [[0, 999_999]]
    ledger.charge(np.arange(1_000_000, 2_000_000), 2.0, release_id="big", batch="1")
    audit = ledger.verify()
    assert audit.spans == 1 and audit.records_charged == 2_000_000
    eps, _ = ledger.spent_many([0, 999_999, 1_999_999, 2_000_000])
    assert eps.tolist() == [2.0, 2.0, 2.0, 0.0]


def test_scattered_charges_take_the_bulk_paths_and_stay_exact(ledger_location):
    # thousands of ranges per charge: one window scan, bulk writes (binary COPY on PostgreSQL)
    ledger = ledger_location.open(epsilon_budget=100.0)
    rng = np.random.default_rng(3)
    model = np.zeros(20_000)
    for i in range(4):
        ids = np.unique(rng.integers(0, 20_000, 6000))
        ledger.charge(ids, 0.5 * (i + 1))
        model[ids] += 0.5 * (i + 1)
    ledger.charge(np.arange(20_000), 1.0)
    model += 1.0
    eps, delta = ledger.spent_many(np.arange(20_000))
    assert (eps == model).all() and (delta == 0).all()
    runs = 1 + int((model[1:] != model[:-1]).sum())
    assert ledger.verify().spans == runs > 2048, "canonical spans: one per run of equal totals"


def test_retries_are_charged_once_and_conflicts_are_refused(ledger_location):
    ledger = ledger_location.open(epsilon_budget=3.0)
    first = ledger.charge([5, 6], 2.0, release_id="job-1", batch="3")
    again = ledger.charge([6, 5], 2.0, release_id="job-1", batch="3")  # same set, any order
    assert again.replayed and not first.replayed and again.seq == first.seq
    assert ledger.spent(5) == (2.0, 0.0) and len(ledger.releases) == 1
    with pytest.raises(IdempotencyConflictError, match="already charged"):
        ledger.charge([5, 7], 2.0, release_id="job-1", batch="3")
    with pytest.raises(IdempotencyConflictError):
        ledger.charge([5, 6], 1.0, release_id="job-1", batch="3")
    # every batch of a release must come from the release's noise key
    ledger.charge([1], 1.0, release_id="keyed", batch="a", key_fingerprint="k1")
    with pytest.raises(ReleaseConflictError, match="another noise key"):
        ledger.charge([2], 1.0, release_id="keyed", batch="b", key_fingerprint="k2")
    assert ledger.spent(2) == (0.0, 0.0)


def test_budgets_are_stored_and_must_agree(ledger_location):
    ledger_location.open(epsilon_budget=4.0, delta_budget=1e-6).charge([1], 1.0)
    reopened = ledger_location.open()  # the stored budget
    assert (reopened.epsilon_budget, reopened.delta_budget) == (4.0, 1e-6)
    assert reopened.spent(1) == (1.0, 0.0)
    with pytest.raises(ValueError, match=r"created with epsilon_budget=4\.0"):
        ledger_location.open(epsilon_budget=8.0)
    for bad in (0, -1.0, math.nan, True):
        with pytest.raises((TypeError, ValueError)):
            PrivacyLedger(epsilon_budget=bad)
    with pytest.raises(ValueError, match="delta_budget"):
        PrivacyLedger(epsilon_budget=1.0, delta_budget=1.0)


def test_a_new_ledger_needs_a_budget_and_its_own_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no ledger at .*give epsilon_budget"):
        PrivacyLedger(path=tmp_path / "new.sqlite")
    assert not (tmp_path / "new.sqlite").exists(), "a failed open creates no file"
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ValueError, match="other tables"):
        PrivacyLedger(1.0, path=other)
    (tmp_path / "text.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither an SQLite ledger nor a JSON-lines journal"):
        PrivacyLedger(1.0, path=tmp_path / "text.txt")
    with pytest.raises(ValueError, match="ledgers are SQLite files"):
        PrivacyLedger(1.0, path=tmp_path / "fresh.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PrivacyLedger(1.0, path=tmp_path / "missing" / "l.sqlite")


def test_the_ledger_pickles_as_a_handle_that_reconnects(ledger_location):
    ledger = ledger_location.open(epsilon_budget=5.0)
    ledger.charge([1], 2.0)
    clone = pickle.loads(pickle.dumps(ledger))
    assert clone.spent(1) == (2.0, 0.0)
    clone.charge([1], 2.0)
    assert ledger.spent(1) == (4.0, 0.0), "both handles share one budget"
    with pytest.raises(TypeError, match="in-memory PrivacyLedger lives in this process only"):
        pickle.dumps(PrivacyLedger(1.0))


# --------------------------------------------------------------------------- corruption


def _sqlite_rows(path, sql, params=()):
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


CORRUPTIONS = [
    pytest.param("UPDATE nf_entries SET epsilon = -1.0", "epsilon -1.0", id="negative-epsilon"),
    pytest.param("UPDATE nf_entries SET delta = 'true'", "delta 'true'", id="text-delta"),
    pytest.param("UPDATE nf_entries SET mechanism = 'magic'", "mechanism 'magic'", id="mechanism"),
    pytest.param("UPDATE nf_entries SET records = x'0102'", "record set is malformed", id="blob"),
    pytest.param("UPDATE nf_entries SET n_records = 7", "counts 7 records", id="count"),
    pytest.param("UPDATE nf_spans SET epsilon = 99.0", "above the budget", id="span-over-budget"),
    pytest.param("UPDATE nf_spans SET epsilon = 'NaN'", "not a finite number", id="span-nan"),
    pytest.param("UPDATE nf_spans SET epsilon = 0.5", "disagree with the", id="span-lower"),
    pytest.param("DELETE FROM nf_meta WHERE key = 'lock'", "lock row", id="lock-row"),
    pytest.param(
        "UPDATE nf_meta SET value = 'x' WHERE key = 'epsilon_budget'",
        "no valid budget",
        id="budget",
    ),
]


@pytest.mark.parametrize(("sql", "message"), CORRUPTIONS)
def test_corrupted_rows_are_refused_with_their_location(tmp_path, sql, message):
    path = tmp_path / "l.sqlite"
    ledger = PrivacyLedger(10.0, path=path)
    ledger.charge([1, 2], 1.0, mechanism="laplace")
    ledger.close()
    _sqlite_rows(path, sql)
    with pytest.raises(LedgerCorruptError, match=message) as err:
        reopened = PrivacyLedger(path=path)
        reopened.verify()
    assert str(path) in str(err.value), "the message names the store"
    if "nf_meta" not in sql:
        assert "table nf_" in str(err.value), "and the table"


def test_postgres_corruption_is_refused_too(postgres_location):
    import psycopg

    ledger_location = postgres_location
    ledger = ledger_location.open(epsilon_budget=10.0)
    ledger.charge([1, 2], 1.0)
    with psycopg.connect(ledger_location.path, autocommit=True) as conn:
        conn.execute(f"UPDATE \"{ledger_location.name}\".nf_entries SET epsilon = 'NaN'")
    with pytest.raises(LedgerCorruptError, match="epsilon nan"):
        _ = ledger.releases
    with psycopg.connect(ledger_location.path, autocommit=True) as conn:
        conn.execute(f'UPDATE "{ledger_location.name}".nf_entries SET epsilon = 1.0')
        conn.execute(f"UPDATE \"{ledger_location.name}\".nf_spans SET epsilon = '-Infinity'")
    with pytest.raises(LedgerCorruptError, match="nf_spans, span lo=1"):
        ledger.charge([2], 1.0)
    # a trigger on the totals is refused by verify() and on the next open
    schema = ledger_location.name
    with psycopg.connect(ledger_location.path, autocommit=True) as conn:
        conn.execute(f'UPDATE "{schema}".nf_spans SET epsilon = 1.0')
        conn.execute(
            f'CREATE FUNCTION "{schema}".skip() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ '
            "LANGUAGE plpgsql"
        )
        conn.execute(
            f'CREATE TRIGGER skip BEFORE UPDATE ON "{schema}".nf_spans FOR EACH ROW '
            f'EXECUTE FUNCTION "{schema}".skip()'
        )
    with pytest.raises(LedgerCorruptError, match="trigger skip"):
        ledger.verify()
    with pytest.raises(LedgerCorruptError, match="did not create"):
        ledger_location.open()


# --------------------------------------------------------------------------- journals


def _journal(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


GOOD = {
    "records": [7, 8],
    "epsilon": 2.0,
    "delta": 0.0,
    "mechanism": "laplace",
    "note": "",
    "time": 1.0,
}


def test_a_journal_of_an_earlier_version_is_imported_once(tmp_path):
    path = tmp_path / "ledger.jsonl"
    _journal(path, [GOOD, {**GOOD, "records": [8], "mechanism": ""}])
    with pytest.warns(UserWarning, match="imported 2 entries"):
        ledger = PrivacyLedger(epsilon_budget=5.0, path=path)
    assert ledger.spent(8) == (4.0, 0.0) and ledger.spent(7) == (2.0, 0.0)
    assert ledger.location == str((tmp_path / "ledger.sqlite").resolve())
    again = PrivacyLedger(epsilon_budget=5.0, path=path)  # no second import
    assert again.spent(8) == (4.0, 0.0) and len(again.releases) == 2
    with pytest.raises(BudgetExceededError):
        again.charge([8], 2.0)
    # lines appended since: only they are imported
    path.write_text(path.read_text() + json.dumps({**GOOD, "records": [9]}) + "\n")
    with pytest.warns(UserWarning, match="imported 1 entries"):
        grown = PrivacyLedger(epsilon_budget=5.0, path=path)
    assert grown.spent(9) == (2.0, 0.0) and grown.spent(8) == (4.0, 0.0)
    # the same content under another name: nothing new
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    assert grown.import_journal(copy) == 0 and len(grown.releases) == 3
    # rewritten rather than appended to: refused, nothing imported
    path.write_text(json.dumps({**GOOD, "records": [1]}) + "\n")
    with pytest.raises(JournalError, match="rewritten, not appended"):
        PrivacyLedger(epsilon_budget=5.0, path=path)
    assert grown.spent(1) == (0.0, 0.0)
    over = tmp_path / "over.jsonl"
    _journal(over, [GOOD, GOOD, GOOD])
    with pytest.raises(BudgetExceededError, match=r"over\.jsonl:3: record 7"):
        PrivacyLedger(epsilon_budget=5.0, path=over)
    assert PrivacyLedger(path=tmp_path / "over.sqlite").releases == [], "nothing imported"


BAD_LINES = [
    pytest.param({**GOOD, "epsilon": float("nan")}, "epsilon must be finite", id="nan"),
    pytest.param({**GOOD, "epsilon": -1.0}, "epsilon must be finite and >= 0", id="negative"),
    pytest.param({**GOOD, "epsilon": True}, "epsilon must be a number", id="bool"),
    pytest.param({**GOOD, "records": [7.5]}, "list of integer ids", id="float-record"),
    pytest.param({**GOOD, "records": [True]}, "list of integer ids", id="bool-record"),
    pytest.param({**GOOD, "records": [3, 3]}, "listed twice", id="duplicate"),
    pytest.param({**GOOD, "records": [-2]}, "negative", id="negative-record"),
    pytest.param({**GOOD, "mechanism": "magic"}, "unknown mechanism", id="mechanism"),
    pytest.param({k: v for k, v in GOOD.items() if k != "delta"}, "missing delta", id="missing"),
    pytest.param({**GOOD, "extra": 1}, "unknown extra", id="extra"),
    pytest.param([7.5], "expected a JSON object", id="not-an-object"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_journal_lines_are_refused_with_their_line(tmp_path, line, message):
    path = tmp_path / "j.jsonl"
    _journal(path, [GOOD, line])
    with pytest.raises(JournalError, match=rf"j\.jsonl:2: .*{message}"):
        PrivacyLedger(epsilon_budget=100.0, path=path)


def test_a_truncated_journal_is_refused_and_says_why(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD)[:20])
    with pytest.raises(JournalError, match=r"j\.jsonl:2: .*cut short"):
        PrivacyLedger(epsilon_budget=100.0, path=path)


def test_the_ledger_command_shows_verifies_and_imports(tmp_path, capsys):
    from noiseforge.cli import main

    path = tmp_path / "team.sqlite"
    ledger = PrivacyLedger(20.0, path=path)
    ledger.charge(np.arange(100), 2.0, mechanism="laplace", release_id="train", note="day 1")
    assert main(["ldp", "ledger", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "entries           1" in out and "records charged   100 (in 1 spans)" in out
    assert "release train" in out and "(day 1)" in out and f"pid {os.getpid()}" in out
    assert main(["ldp", "ledger", "spent", str(path), "5", "500"]) == 0
    out = capsys.readouterr().out
    assert "record 5: epsilon 2" in out and "record 500: epsilon 0" in out
    assert main(["ldp", "ledger", "verify", str(path)]) == 0
    assert "verified" in capsys.readouterr().out
    journal = tmp_path / "old.jsonl"
    _journal(journal, [GOOD])
    assert main(["ldp", "ledger", "import", str(journal), "--into", str(path)]) == 0
    assert "imported 1 entries" in capsys.readouterr().out
    assert PrivacyLedger(path=path).spent(7) == (4.0, 0.0)
    ledger.close()
    _sqlite_rows(path, "UPDATE nf_spans SET epsilon = 1.0 WHERE lo = 0")
    assert main(["ldp", "ledger", "verify", str(path)]) == 2
    assert "disagree" in capsys.readouterr().err
    assert main(["ldp", "ledger", "show", str(tmp_path / "none.sqlite")]) == 2
    assert "no ledger at" in capsys.readouterr().err


def test_remaining_is_always_chargeable():
    rng = np.random.default_rng(8)
    for _ in range(200):
        budget = float(rng.choice([5488.0, 1.0, 10.0, rng.uniform(0.1, 1e4)]))
        ledger = PrivacyLedger(budget)
        ledger.charge([0], float(rng.uniform(0, budget)))
        rest, _ = ledger.remaining(0)
        ledger.charge([0], rest)  # exactly what is left is accepted
        with pytest.raises(BudgetExceededError):
            ledger.charge([0], math.ulp(budget))


def test_odd_arguments_get_clear_errors(tmp_path):
    ledger = PrivacyLedger(5.0, path=tmp_path / "l.sqlite")
    with pytest.raises(ValueError, match="libpq connection string"):
        PrivacyLedger(5.0, path="host=db dbname=privacy password=secret")
    assert not list(tmp_path.glob("host=*")), "no file named after a connection string"
    for bad in (math.inf, 0, -1, True):
        with pytest.raises(ValueError, match="timeout"):
            PrivacyLedger(5.0, timeout=bad)
    for r in (2**64, -5):
        with pytest.raises(ValueError, match="record ids lie in"):
            ledger.spent(r)
    with pytest.raises(ValueError, match="NUL"):
        ledger.charge([1], 1.0, note="a\x00b")
    with pytest.raises(ValueError, match="surrogate"):
        ledger.charge([1], 1.0, note="\ud800")
    assert ledger.spent(1) == (0.0, 0.0)


def test_a_corrupted_span_bound_is_refused_on_every_read(tmp_path):
    path = tmp_path / "l.sqlite"
    PrivacyLedger(10.0, path=path).charge([1, 2], 1.0)
    _sqlite_rows(path, "UPDATE nf_spans SET hi = 'x'")
    ledger = PrivacyLedger(path=path)
    for call in (
        lambda: ledger.spent(1),
        lambda: ledger.spent_many([1]),
        lambda: ledger.charge([2], 1.0),
    ):
        with pytest.raises(LedgerCorruptError, match="nf_spans"):
            call()


def test_another_programs_sqlite_file_is_left_as_it_was(tmp_path):
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    with pytest.raises(ValueError, match="other tables"):
        PrivacyLedger(1.0, path=other)
    assert sqlite3.connect(other).execute("PRAGMA journal_mode").fetchone()[0] == mode
    (tmp_path / "junk.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)
    with pytest.raises(LedgerCorruptError, match="not a readable SQLite database"):
        PrivacyLedger(path=tmp_path / "junk.sqlite")


def test_a_busy_postgres_ledger_recovers_when_the_lock_is_free(postgres_location):
    import psycopg

    ledger = postgres_location.open(epsilon_budget=10.0, timeout=0.5)
    ledger.charge([1], 1.0)
    holder = psycopg.connect(postgres_location.path)
    holder.execute(
        f"SELECT value FROM \"{postgres_location.name}\".nf_meta WHERE key = 'lock' FOR UPDATE"
    )
    from noiseforge.ldp.ledger import LedgerBusyError

    with pytest.raises(LedgerBusyError, match="held the ledger's lock"):
        ledger.charge([1], 1.0)
    holder.rollback()
    holder.close()
    assert ledger.spent(1) == (1.0, 0.0), "the handle still works after a busy error"
    ledger.charge([1], 1.0)
    assert ledger.spent(1) == (2.0, 0.0)


def test_a_role_without_create_on_the_database_can_open_an_existing_ledger(postgres_location):
    import uuid

    import psycopg

    postgres_location.open(epsilon_budget=10.0).charge([3], 1.0)
    role = f"r_{uuid.uuid4().hex[:8]}"
    schema = postgres_location.name
    with psycopg.connect(postgres_location.path, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        admin.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {role}'
        )
        admin.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO {role}')
        dbname = admin.info.dbname
        admin.execute(f"REVOKE CREATE ON DATABASE {dbname} FROM PUBLIC")
    try:
        url = postgres_location.path.replace("postgres@", f"{role}@")
        worker = PrivacyLedger(path=url, name=schema)
        worker.charge([3], 1.0)
        assert worker.spent(3) == (2.0, 0.0) and worker.verify().entries == 2
        worker.close()
    finally:
        with psycopg.connect(postgres_location.path, autocommit=True) as admin:
            admin.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {role}')
            admin.execute(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "{schema}" FROM {role}')
            admin.execute(f'REVOKE ALL ON SCHEMA "{schema}" FROM {role}')
            admin.execute(f"DROP ROLE {role}")


def test_tampered_schemas_and_damaged_files_are_refused(tmp_path):
    def fresh(name):
        path = tmp_path / name
        ledger = PrivacyLedger(10.0, path=path)
        ledger.charge(np.arange(10), 1.0)
        ledger.charge(np.arange(0, 3000, 2), 0.125)
        ledger.close()
        return path

    # a trigger that makes charges skip the totals: refused on open
    path = fresh("trigger.sqlite")
    _sqlite_rows(path, "CREATE TRIGGER t BEFORE UPDATE ON nf_spans BEGIN SELECT RAISE(IGNORE); END")
    with pytest.raises(LedgerCorruptError, match=r"did not create .*trigger t"):
        PrivacyLedger(path=path)
    # an added constraint that refuses the ledger's writes: a clear error, nothing charged
    path = tmp_path / "unique.sqlite"
    PrivacyLedger(10.0, path=path).charge([1], 1.0)
    _sqlite_rows(path, "CREATE UNIQUE INDEX ux ON nf_entries (mechanism)")
    ledger = PrivacyLedger(path=path)
    with pytest.raises(LedgerCorruptError, match="schema was changed outside noiseforge"):
        ledger.charge([1], 1.0)
    assert ledger.spent(1) == (1.0, 0.0)
    # a budget that overflows a float
    path = fresh("budget.sqlite")
    _sqlite_rows(path, "UPDATE nf_meta SET value = '0x1p+2000' WHERE key = 'epsilon_budget'")
    with pytest.raises(LedgerCorruptError, match="no valid budget"):
        PrivacyLedger(path=path)
    # damaged schema text (SQLite's own message is not valid UTF-8 then)
    path = fresh("schema.sqlite")
    data = bytearray(path.read_bytes())
    k = data.index(b"NULL", data.index(b"CREATE TABLE nf_entries")) + 2
    data[k : k + 2] = b"\xff\xff"
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerCorruptError, match=r"damaged|not a readable"):
        PrivacyLedger(path=path).verify()


def test_record_ranges_are_taken_strictly():
    assert RecordSet.from_ranges([[0, 4], [9, 9]]).to_numpy().tolist() == [0, 1, 2, 3, 4, 9]
    for bad, kind in (
        ([[7.5, 12.5]], TypeError),
        ([[True, True]], TypeError),
        ([["1", "3"]], TypeError),
        ([0, 5], ValueError),
        ([[0, 1, 5, 6]], ValueError),
        ([[[1, 2]]], ValueError),
        (np.array([[0, 2**64 - 1]], dtype=np.uint64), ValueError),
        (np.array([[0, 1]], dtype=object), TypeError),
        ([[3, 1]], ValueError),
        ([[0, 2], [2, 5]], ValueError),
    ):
        with pytest.raises(kind):
            RecordSet.from_ranges(bad)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(
            '{"records": [1], "epsilon": 1'
            + "0" * 400
            + ', "delta": 0, "mechanism": "laplace", "note": "", "time": 1}',
            "too large",
            id="huge-int",
        ),
        pytest.param(
            '{"records": ' + "[" * 5000 + "]" * 5000 + "}", "not a JSON object", id="deep-nesting"
        ),
    ],
)
def test_hostile_journal_lines_are_journal_errors(tmp_path, line, message):
    path = tmp_path / "j.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(JournalError, match=message):
        PrivacyLedger(epsilon_budget=100.0, path=path)
