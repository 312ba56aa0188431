"""The ledger's promises under concurrency and faults, on both stores: racing
processes and threads never take a record past its budget, kill -9 loses no
acknowledged charge and leaves no partial entry, and a failed write -- a full disk,
an exception inside the transaction, a dropped connection -- charges nothing."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from noiseforge.ldp import BudgetExceededError, LedgerStoreError
from noiseforge.ldp.ledger import stores
from tests.support.ledger_worker import RECORDS

ROOT = Path(__file__).resolve().parents[2]


def _worker(location, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.ledger_worker", args[0], *location.args(), *args[1:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_eight_racing_processes_never_exceed_a_record_budget(ledger_location, tmp_path):
    budget = 10.0
    ledger = ledger_location.open(epsilon_budget=budget)
    procs = [
        _worker(ledger_location, "race", str(seed), "60", str(tmp_path / f"w{seed}.jsonl"))
        for seed in range(8)
    ]
    results = [_finish(p) for p in procs]
    assert sum(r["refused"] for r in results) > 0, "the budget must actually run out"
    assert sum(r["replayed"] for r in results) > 0, "and retries must have happened"
    accepted: dict[int, float] = defaultdict(float)
    seqs = set()
    for seed in range(8):
        for line in (tmp_path / f"w{seed}.jsonl").read_text().splitlines():
            entry = json.loads(line)
            seqs.add(entry["seq"])
            for r in entry["records"]:
                accepted[r] += entry["eps"]  # binary fractions: exact sums
    stored = {e.seq for e in ledger.releases}
    assert stored == seqs, "every acknowledged charge is stored, and nothing else"
    eps, _ = ledger.spent_many(np.arange(RECORDS))
    for r in range(RECORDS):
        assert accepted[r] <= budget
        assert eps[r] == accepted[r], (r, eps[r], accepted[r])
    assert max(accepted.values()) == budget, "contention filled some record's budget exactly"
    audit = ledger.verify()
    assert audit.entries == len(seqs) and audit.max_epsilon <= budget


def test_a_pickled_ledger_charges_one_budget_from_a_process_pool(ledger_location):
    import multiprocessing

    from tests.support.ledger_worker import charge_pickled

    ledger = ledger_location.open(epsilon_budget=3.0)
    jobs = [(ledger, [7, 8], 1.0)] * 5 + [(ledger, [9], 1.0)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        accepted = pool.map(charge_pickled, jobs)
    assert sum(accepted[:5]) == 3 and accepted[5], "three charges fit records 7 and 8"
    assert ledger.spent(7) == (3.0, 0.0) and ledger.spent(9) == (1.0, 0.0)
    assert ledger.verify().entries == 4


def test_threads_and_separate_handles_share_one_budget(ledger_location):
    first = ledger_location.open(epsilon_budget=4.0)
    second = ledger_location.open()  # another object on the same store
    accepted = []
    lock = threading.Lock()

    def charge(ledger, i):
        try:
            ledger.charge([0, 1 + i % 3], 1.0)
        except BudgetExceededError:
            return
        with lock:
            accepted.append(i)

    threads = [threading.Thread(target=charge, args=((first, second)[i % 2], i)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 4, "record 0 admits four charges of 1.0, whichever handle makes them"
    assert first.spent(0) == second.spent(0) == (4.0, 0.0)
    first.verify()


def _settled(ledger, timeout: float = 30.0):
    """The audit and the entries, read once the store has settled. A client killed
    right after sending COMMIT leaves a PostgreSQL backend that still commits its
    transaction a moment later: until it has, an audit and a later read of the
    entries can see different snapshots (an entry that is complete in both, but
    present in only one). SQLite has no such server-side tail."""
    deadline = time.monotonic() + timeout
    while True:
        before = len(ledger.releases)
        audit = ledger.verify()
        stored = {e.seq: e for e in ledger.releases}
        if before == audit.entries == len(stored) or time.monotonic() > deadline:
            return audit, stored
        time.sleep(0.2)


def _wait_until_charging(procs, logs, acks: int, timeout: float = 120.0) -> None:
    """Until each log holds ``acks`` acknowledged charges (a worker that exits first fails)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = [log.read_text().count("\n") if log.exists() else 0 for log in logs]
        if min(counts) >= acks:
            return
        for p in procs:
            assert p.poll() is None, p.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"the workers acknowledged {counts} charges"
        time.sleep(0.05)


def test_kill_9_loses_no_acknowledged_charge(ledger_location, tmp_path):
    ledger = ledger_location.open(epsilon_budget=1e9)
    rng = random.Random(5)
    logs = []
    for round_ in range(3):
        procs = []
        for w in range(3):
            log = tmp_path / f"r{round_}w{w}.jsonl"
            logs.append(log)
            procs.append(_worker(ledger_location, "loop", str(10 * round_ + w), str(log)))
        # kill only once every worker is charging (start-up takes seconds on a loaded
        # machine), after a random stretch of it
        _wait_until_charging(procs, logs[-3:], acks=3)
        time.sleep(0.2 + rng.random())
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait(timeout=30)
            p.stdout.close()
            p.stderr.close()
        # after every round: no partial entry, totals equal the entries, every ack stored
        audit, stored = _settled(ledger)
        acked = [
            json.loads(line)
            for log in logs
            if log.exists()
            for line in log.read_text().splitlines()
            if line.endswith("}")  # a line cut by the kill was never acknowledged
        ]
        for a in acked:
            assert a["seq"] in stored, f"acknowledged charge {a['seq']} is lost"
            e = stored[a["seq"]]
            assert len(e.records) == a["n"] and e.records.ranges[0, 0] == a["first"]
        assert audit.entries == len(stored) >= len(acked)
    assert len(acked) > 20, "the workers must have been charging when they were killed"


def test_a_full_disk_charges_nothing_and_the_ledger_still_opens(tmp_path):
    from noiseforge.ldp import PrivacyLedger

    path = tmp_path / "l.sqlite"
    ledger = PrivacyLedger(10.0, path=path)
    ledger.charge([1, 2, 3], 1.0)
    ledger.close()
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    limit = max(sizes) + 4096
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.ledger_worker",
            "diskfull",
            str(path),
            "-",
            str(limit),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "LedgerStoreError", outcome
    assert "nothing was charged" in outcome["message"]
    reopened = PrivacyLedger(path=path)
    assert reopened.spent(0) == (0.0, 0.0) and reopened.spent(2) == (1.0, 0.0)
    assert len(reopened.releases) == 1
    assert reopened.verify().entries == 1
    reopened.charge([2], 1.0)  # and it goes on working
    assert reopened.spent(2) == (2.0, 0.0)


def test_an_exception_inside_the_transaction_charges_nothing(ledger_location, monkeypatch):
    ledger = ledger_location.open(epsilon_budget=10.0)
    ledger.charge([1, 2], 1.0)
    real = stores.Transaction.insert_entry

    def failing(self, values):
        raise OSError(28, "No space left on device")  # after the totals were updated

    monkeypatch.setattr(stores.Transaction, "insert_entry", failing)
    with pytest.raises(OSError, match="No space left"):
        ledger.charge(np.arange(100), 2.0)
    monkeypatch.setattr(stores.Transaction, "insert_entry", real)
    assert ledger.spent(1) == (1.0, 0.0) and ledger.spent(50) == (0.0, 0.0)
    assert ledger.verify().entries == 1


def test_a_dropped_postgres_connection_is_retried_and_charged_once(postgres_location, monkeypatch):
    import psycopg

    ledger = postgres_location.open(epsilon_budget=10.0)
    ledger.charge([1], 1.0)
    # the server ends the session between charges: the next charge reconnects
    pid = ledger._store.connection().info.backend_pid
    with psycopg.connect(postgres_location.path, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    ledger.charge([1], 1.0)
    assert ledger.spent(1) == (2.0, 0.0)
    # the commit succeeds but its acknowledgement is lost: the retry finds the entry
    real = stores.PostgresStore._commit
    calls = {"n": 0}

    def commit_then_drop(self, conn, cur):
        real(self, conn, cur)
        calls["n"] += 1
        if calls["n"] == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(stores.PostgresStore, "_commit", commit_then_drop)
    entry = ledger.charge([1], 1.0, release_id="r", batch="0")
    assert entry.replayed, "the retry found the committed entry instead of charging again"
    monkeypatch.setattr(stores.PostgresStore, "_commit", real)
    assert ledger.spent(1) == (3.0, 0.0)
    assert ledger.verify().entries == 3


def test_a_ledger_that_cannot_be_reached_says_so(tmp_path):
    from noiseforge.ldp import PrivacyLedger

    with pytest.raises(LedgerStoreError, match="cannot connect to the ledger database"):
        PrivacyLedger(1.0, path="postgresql://nobody@127.0.0.1:9/none", timeout=2)


def test_threads_queueing_on_one_handle_each_wait_at_most_the_timeout(tmp_path):
    from noiseforge.ldp import LedgerStoreError, PrivacyLedger

    path = tmp_path / "l.sqlite"
    ledger = PrivacyLedger(10.0, path=path, timeout=0.5)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    waited = []

    def charge():
        t0 = time.monotonic()
        with pytest.raises(LedgerStoreError):
            ledger.charge([1], 1.0)
        waited.append(time.monotonic() - t0)

    threads = [threading.Thread(target=charge) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blocker.execute("ROLLBACK")
    assert max(waited) < 1.6, waited  # about timeout (queue) + timeout (SQLite), not 4 x
    ledger.charge([1], 1.0)
    assert ledger.spent(1) == (1.0, 0.0)


def _fork_and_charge(ledger, tmp_path) -> tuple[int, str]:
    """Fork; the child charges record 2 through ``ledger`` and exits with 0 (charged),
    3 (a ledger error, its message in child.txt) or 4; returns (code, message)."""
    pid = os.fork()
    if pid == 0:
        code = 4
        try:
            ledger.charge([2], 1.0)
            code = 0
        except LedgerStoreError as exc:
            (tmp_path / "child.txt").write_text(str(exc))
            code = 3
        finally:
            os._exit(code)
    return pid, str(tmp_path / "child.txt")


def _wait_child(pid, seconds=30) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork")
def test_a_fork_while_a_thread_holds_the_handle_does_not_block_the_child(
    postgres_location, tmp_path
):
    import psycopg

    ledger = postgres_location.open(epsilon_budget=10.0, timeout=5.0)
    blocker = psycopg.connect(postgres_location.path)
    blocker.execute(
        f"SELECT * FROM \"{postgres_location.name}\".nf_meta WHERE key = 'lock' FOR UPDATE"
    )
    waiting = threading.Thread(target=ledger.charge, args=([1], 1.0))
    waiting.start()
    time.sleep(0.5)  # the thread now holds the handle's lock, waiting for the row lock
    pid, _ = _fork_and_charge(ledger, tmp_path)
    blocker.rollback()
    blocker.close()
    waiting.join()
    why = (tmp_path / "child.txt").read_text() if _wait_child(pid) else ""
    assert not why and ledger.spent(2) == (1.0, 0.0), f"the child's charge failed: {why}"
    assert ledger.spent(1) == (1.0, 0.0)
    ledger.verify()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork")
def test_a_child_forked_mid_transaction_gets_an_error_not_a_hang(tmp_path):
    # SQLite's own locks do not survive fork: a child forked while a thread of the parent
    # is inside a transaction cannot use the file (SQLite's rule), and says so in time
    from noiseforge.ldp import PrivacyLedger

    path = tmp_path / "l.sqlite"
    ledger = PrivacyLedger(10.0, path=path, timeout=1.0)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    waiting = threading.Thread(target=_charge_quietly, args=(ledger,))
    waiting.start()
    time.sleep(0.3)
    pid, _ = _fork_and_charge(ledger, tmp_path)
    blocker.execute("ROLLBACK")
    waiting.join()
    assert _wait_child(pid, 20) in (0, 3)
    ledger.verify()


def _charge_quietly(ledger):
    with contextlib.suppress(LedgerStoreError):
        ledger.charge([1], 1.0)
