"""Ledger throughput under concurrency: charges/s for SQLite and PostgreSQL, 1/2/4 processes.

Each measurement opens a fresh ledger (a new SQLite file; a new PostgreSQL
schema) with no budget limit, forks ``procs`` processes that each open it by
path or URL (as Ray workers do), waits until all are connected, then lets every
process charge disjoint blocks of ``block`` contiguous record ids back to back
for ``--seconds``. Two modes:

- ``charge``: :meth:`PrivacyLedger.charge` only (one write transaction);
- ``block``: what one released block costs the ledger on the Ray engine -- the
  charge, binding its output digest (:meth:`PrivacyLedger.record_output`) and the
  query stage's check of the entry (:meth:`PrivacyLedger.entry`): three round trips.

Reports operations/s (sum over the processes; a ``block`` op is a whole block)
and records/s, median and range over ``--repeat`` runs, the configurations
interleaved. PostgreSQL: ``--postgres-url URL``, ``$NOISEFORGE_TEST_POSTGRES_URL``,
or ``--start-postgres DIR`` (``scripts/postgres.sh start DIR``, stopped at the end).

    python benchmarks/ledger_throughput.py [--start-postgres /tmp/nfpg_bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROCS, BLOCKS, MODES = (1, 2, 4), (1000, 10000), ("charge", "block")
SPAN = 10**12  # record ids of process p start at p * SPAN: the processes never collide


def _worker(
    location: str,
    name: str,
    proc: int,
    block: int,
    mode: str,
    seconds: float,
    ready: Any,
    counts: Any,
) -> None:
    """Charge blocks back to back for ``seconds`` after every process is connected."""
    from noiseforge.ldp.ledger import PrivacyLedger

    ledger = PrivacyLedger(path=location, name=name, timeout=120)
    ledger.spent(0)  # connected, schema read
    ready.wait()
    digest = hashlib.sha256(b"benchmark").hexdigest()
    base, done = proc * SPAN, 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        ids = np.arange(base + done * block, base + (done + 1) * block, dtype=np.int64)
        batch = f"p{proc}-b{done}"
        entry = ledger.charge(ids, 1.0, release_id="bench", batch=batch)
        if mode == "block":
            ledger.record_output(entry, digest)
            if ledger.entry("bench", batch) is None:
                raise AssertionError("a charged block is missing from the ledger")
        done += 1
    counts[proc] = done
    ledger.close()


def measure(
    store: str, url: str | None, folder: Path, procs: int, block: int, mode: str, seconds: float
) -> dict[str, float]:
    """Operations/s and records/s of one configuration on a fresh ledger."""
    from noiseforge.ldp.ledger import PrivacyLedger

    name = f"b_{uuid.uuid4().hex[:12]}"
    location = url if store == "postgresql" else str(folder / f"{name}.sqlite")
    PrivacyLedger(math.inf, path=location, name=name).close()
    ctx = mp.get_context("fork")
    ready = ctx.Barrier(procs + 1)
    counts = ctx.Array("q", procs)
    workers = [
        ctx.Process(target=_worker, args=(location, name, p, block, mode, seconds, ready, counts))
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    ready.wait(timeout=120)
    t0 = time.perf_counter()
    for w in workers:
        w.join(timeout=seconds + 300)
    wall = time.perf_counter() - t0
    if any(w.exitcode for w in workers):
        raise SystemExit(f"a {store} worker failed ({procs} processes, block {block}, {mode})")
    total = int(sum(counts[:]))
    ledger = PrivacyLedger(path=location, name=name)
    entries = len(ledger.entries("bench"))
    ledger.close()
    if entries != total:
        raise AssertionError(f"{total} charges made but the ledger holds {entries}")
    if store == "postgresql":
        _drop_schema(url, name)
    return {"ops_per_s": total / wall, "records_per_s": total * block / wall, "ops": total}


def _drop_schema(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _summary(values: list[float]) -> str:
    return f"{np.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="charging time per measurement")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--procs", default=",".join(map(str, PROCS)))
    ap.add_argument("--blocks", default=",".join(map(str, BLOCKS)))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument("--postgres-url", default=os.environ.get("NOISEFORGE_TEST_POSTGRES_URL"))
    ap.add_argument("--start-postgres", default=None, metavar="DIR")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    stores = [s for s in args.stores.split(",") if s]
    if not set(stores) <= {"sqlite", "postgresql"}:
        raise SystemExit(f"--stores must name sqlite and/or postgresql, got {args.stores!r}")
    url = args.postgres_url
    started = False
    if "postgresql" in stores and not url:
        if not args.start_postgres:
            raise SystemExit(
                "PostgreSQL needs a server: pass --postgres-url URL, set "
                "NOISEFORGE_TEST_POSTGRES_URL, or --start-postgres DIR (scripts/postgres.sh), "
                "or measure --stores sqlite only"
            )
        url = subprocess.run(
            ["bash", str(ROOT / "scripts" / "postgres.sh"), "start", args.start_postgres],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        started = True
    procs = [int(p) for p in args.procs.split(",")]
    blocks = [int(b) for b in args.blocks.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, list[dict[str, float]]] = {}
    folder = Path(tempfile.mkdtemp(prefix="nf-ledger-bench-"))
    try:
        for r in range(args.repeat):
            for store in stores:
                for mode in modes:
                    for block in blocks:
                        for p in procs:
                            key = f"{store}/{mode}/{block}/{p}"
                            res = measure(store, url, folder, p, block, mode, args.seconds)
                            res["load"] = os.getloadavg()[0]
                            results.setdefault(key, []).append(res)
            print(f"run {r + 1} done", flush=True)
    finally:
        if started:
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", args.start_postgres],
                check=False,
            )
    print(
        f"\nledger operations/s (sum over processes), median (min-max) of {args.repeat} runs "
        f"of {args.seconds:g} s; {os.cpu_count()} CPU cores, load average "
        f"{np.median([x['load'] for v in results.values() for x in v]):.1f}"
    )
    print(
        f"{'store':11s} {'mode':7s} {'block':>6s}" + "".join(f"{f'{p} proc':>20s}" for p in procs)
    )
    best: dict[str, list[float]] = {}
    for store in stores:
        for mode in modes:
            for block in blocks:
                cells = []
                for p in procs:
                    ops = [x["ops_per_s"] for x in results[f"{store}/{mode}/{block}/{p}"]]
                    cells.append(f"{_summary(ops):>20s}")
                    if mode == "block" and block == max(blocks):
                        best.setdefault(store, []).append(float(np.median(ops)))
                print(f"{store:11s} {mode:7s} {block:6d}" + "".join(cells))
    print("\nrecords/s charged (block mode, the largest block)")
    for store in stores:
        b = max(blocks)
        print(
            f"{store:11s}"
            + "".join(
                f"  {_summary([x['records_per_s'] for x in results[f'{store}/block/{b}/{p}']]):>26s}"
                for p in procs
            )
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "results": results,
                    # released blocks/s one ledger sustains (block mode, the largest block,
                    # the best process count): the capacity model's measured ledger rate
                    "blocks_per_s": {s: max(v) for s, v in best.items()},
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
