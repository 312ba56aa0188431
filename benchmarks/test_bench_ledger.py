"""The privacy ledger: charges per second and seconds per release of 1M records,
SQLite and PostgreSQL, each against the store's own floor in the same run; and the
ledger's share of a 1M x 784 release.

Run: ``bash scripts/run.sh bench -k ledger`` (starts a throwaway PostgreSQL on
loopback), or ``pytest benchmarks/test_bench_ledger.py --benchmark-enable
--benchmark-json=bench.json`` with ``NOISEFORGE_TEST_POSTGRES_URL`` set, then
``python benchmarks/report.py bench.json``. ``NOISEFORGE_BENCH_RELEASE_ROWS``
scales the release benchmark down (default 1000000 rows of 784 features: about
7 GB of memory).

Peers (the floor a store can do, not a ledger):
* a charge: one durable single-row INSERT transaction on the same store and settings;
* 1M records: one row per record, 1M rows INSERTed in one transaction -- what a
  per-record table costs before any budget check;
* a release: the bare noise op on the same rows (what a release costs without
  accounting or sealing).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid

import numpy as np
import pytest
import torch

from noiseforge.ldp import PrivacyLedger, release
from noiseforge.ldp.seal import seal
from noiseforge.ops import ldp_noise

POSTGRES_URL = os.environ.get("NOISEFORGE_TEST_POSTGRES_URL", "")
STORES = ["sqlite", "postgresql"]
RELEASE_ROWS = int(os.environ.get("NOISEFORGE_BENCH_RELEASE_ROWS", "1000000"))


class Store:
    """A fresh ledger location per call of :meth:`new` (dropped schemas afterwards)."""

    def __init__(self, kind: str, tmp_path) -> None:
        if kind == "postgresql" and not POSTGRES_URL:
            pytest.skip("NOISEFORGE_TEST_POSTGRES_URL is unset (scripts/run.sh bench sets it)")
        self.kind, self.tmp, self.schemas = kind, tmp_path, []

    def new(self, budget: float = 1e12) -> PrivacyLedger:
        name = f"b_{uuid.uuid4().hex[:12]}"
        if self.kind == "sqlite":
            return PrivacyLedger(budget, path=self.tmp / f"{name}.sqlite")
        self.schemas.append(name)
        return PrivacyLedger(budget, path=POSTGRES_URL, name=name)

    def raw(self):
        """A connection for the peer, with the ledger's durability settings."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(
                self.tmp / f"peer-{uuid.uuid4().hex[:8]}.sqlite", isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (record INTEGER PRIMARY KEY, epsilon REAL)")
            return conn, "?"
        import psycopg

        conn = psycopg.connect(POSTGRES_URL, autocommit=True)
        name = f"p_{uuid.uuid4().hex[:12]}"
        self.schemas.append(name)
        conn.execute(f'CREATE SCHEMA "{name}"')
        conn.execute(
            f'CREATE TABLE "{name}".t (record BIGINT PRIMARY KEY, epsilon DOUBLE PRECISION)'
        )
        conn.execute(f'SET search_path TO "{name}"')
        return conn, "%s"

    def close(self) -> None:
        if self.kind == "postgresql" and self.schemas:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                for s in self.schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    s = Store(request.param, tmp_path)
    yield s
    s.close()


# --------------------------------------------------------------------------- charges per second


def test_charge(benchmark, store):
    ledger = store.new()
    start = [0]
    benchmark.group = f"ledger-charge-{store.kind}"
    benchmark.extra_info.update(elements=16)

    def run():
        ledger.charge(np.arange(start[0], start[0] + 16), 1.0)
        start[0] += 16

    benchmark.pedantic(run, rounds=300, warmup_rounds=10)


def test_charge_peer_single_row_insert(benchmark, store):
    conn, mark = store.raw()
    i = [0]
    benchmark.group = f"ledger-charge-{store.kind}"
    benchmark.extra_info.update(elements=16)

    def run():
        if store.kind == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"INSERT INTO t VALUES ({mark}, {mark})", (i[0], 1.0))
            conn.execute("COMMIT")
        else:
            with conn.transaction():
                conn.execute(f"INSERT INTO t VALUES ({mark}, {mark})", (i[0], 1.0))
        i[0] += 1

    benchmark.pedantic(run, rounds=300, warmup_rounds=10)
    conn.close()


# --------------------------------------------------------------------------- a million records

MILLION = 1_000_000


def _fresh(store):
    return (store.new(),), {}


@pytest.mark.parametrize("pattern", ["one-charge", "100-batches", "scattered"])
def test_million_records(benchmark, store, pattern):
    rng = np.random.default_rng(0)
    scattered = np.sort(rng.choice(10 * MILLION, MILLION, replace=False))
    benchmark.group = f"ledger-1M-records-{store.kind}"
    benchmark.extra_info.update(elements=MILLION)

    def run(ledger):
        if pattern == "one-charge":
            ledger.charge(np.arange(MILLION), 1.0)
        elif pattern == "100-batches":
            for b in range(100):
                ledger.charge(np.arange(b * 10_000, (b + 1) * 10_000), 1.0, batch=str(b))
        else:
            ledger.charge(scattered, 1.0)

    rounds = 2 if pattern == "scattered" and store.kind == "postgresql" else 3
    benchmark.pedantic(run, setup=lambda: _fresh(store), rounds=rounds, warmup_rounds=0)


def test_million_records_peer_one_row_each(benchmark, store):
    benchmark.group = f"ledger-1M-records-{store.kind}"
    benchmark.extra_info.update(elements=MILLION)
    rows = [(i, 1.0) for i in range(MILLION)]

    def setup():
        return (store.raw(),), {}

    def run(raw):
        conn, mark = raw
        sql = f"INSERT INTO t VALUES ({mark}, {mark})"
        if store.kind == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        else:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql, rows)
        conn.close()

    benchmark.pedantic(run, setup=setup, rounds=2, warmup_rounds=0)


# --------------------------------------------------------------------------- a 1M x 784 release


@pytest.fixture(scope="module")
def images():
    return torch.rand(RELEASE_ROWS, 784, generator=torch.Generator().manual_seed(0))


def test_release_1m_x_784(benchmark, images, tmp_path):
    ids = np.arange(len(images))
    benchmark.group = "release-1M-x-784"
    benchmark.extra_info.update(elements=images.numel())
    ledgers = []

    def setup():
        ledgers.append(PrivacyLedger(1e12, path=tmp_path / f"r{len(ledgers)}.sqlite"))
        return (ledgers[-1],), {}

    def run(ledger):
        release(images, ids, ledger, epsilon=7.0, lower=0.0, upper=1.0)

    benchmark.pedantic(run, setup=setup, rounds=3, warmup_rounds=1)
    # the ledger's share: the same charge and output record on a fresh ledger, timed alone
    shares = []
    for _ in range(3):
        ledger = PrivacyLedger(1e12, path=tmp_path / f"share{len(shares)}.sqlite")
        t0 = time.perf_counter()
        entry = ledger.charge(ids, 5488.0, mechanism="laplace")
        ledger.record_output(entry, "0" * 64)
        shares.append(time.perf_counter() - t0)
    # and the seal's: hashing the released rows once
    noisy = ldp_noise(images, epsilon=7.0, lower=0.0, upper=1.0)[:, 0]
    seals = []
    for _ in range(3):
        t0 = time.perf_counter()
        seal(noisy, torch.from_numpy(ids), "bench")
        seals.append(time.perf_counter() - t0)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        ledger_seconds=float(np.median(shares)),
        ledger_share=float(np.median(shares)) / median,
        seal_seconds=float(np.median(seals)),
        seal_share=float(np.median(seals)) / median,
    )
    print(
        f"\nrelease of {len(images)} x 784: {median:.2f} s; ledger {np.median(shares):.3f} s "
        f"({np.median(shares) / median:.1%}), seal {np.median(seals):.2f} s "
        f"({np.median(seals) / median:.1%})"
    )


def test_release_1m_x_784_peer_noise_only(benchmark, images):
    benchmark.group = "release-1M-x-784"
    benchmark.extra_info.update(elements=images.numel())

    def run():  # a fresh output, as release() returns one
        ldp_noise(images, epsilon=7.0, lower=0.0, upper=1.0)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
