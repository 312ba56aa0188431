"""Worker processes of the ledger's multi-process tests.

Run as ``python -m tests.support.ledger_worker MODE PATH NAME ...`` from the repository
root (PATH: an SQLite file or a postgresql:// URL; NAME: the PostgreSQL schema,
or ``-``). Every mode prints one JSON line with its outcome on stdout.

race SEED N OUT       N random charges (some repeated as retries); OUT gets one JSON
                      line per acknowledged charge
loop SEED OUT         charges until killed; each acknowledged charge is appended to
                      OUT and synced to disk before the next one starts
diskfull LIMIT        sets RLIMIT_FSIZE to LIMIT bytes, then makes a large charge
release SEED RID X IDS OUT
                      releases rows IDS (a .npy of positions into X.npy) with seed
                      SEED under release id RID, saving the noised rows to OUT.npy
"""

from __future__ import annotations

import json
import os
import random
import sys

import numpy as np

from noiseforge.ldp import BudgetExceededError, PrivacyLedger, release

# binary fractions: sums are exact in float64, so a test can compare totals exactly
COSTS = (0.25, 0.5, 1.0, 1.5, 2.5)
RECORDS = 48


def _open(path: str, name: str) -> PrivacyLedger:
    kw = {} if name == "-" else {"name": name}
    return PrivacyLedger(path=path, **kw)


def race(ledger: PrivacyLedger, seed: int, n: int, out: str) -> dict:
    rng = random.Random(seed)
    accepted = refused = replayed = 0
    with open(out, "w") as log:
        last = None
        for i in range(n):
            if last is not None and rng.random() < 0.2:
                records, eps, rid, batch = last  # a retry of the previous charge
            else:
                records = rng.sample(range(RECORDS), rng.randint(1, 12))
                eps, rid, batch = rng.choice(COSTS), f"w{seed}", f"b{i}"
            try:
                entry = ledger.charge(records, eps, release_id=rid, batch=batch)
            except BudgetExceededError:
                refused += 1
                last = None
                continue
            last = (records, eps, rid, batch)
            if entry.replayed:
                replayed += 1
                continue
            accepted += 1
            log.write(json.dumps({"seq": entry.seq, "records": sorted(records), "eps": eps}) + "\n")
    return {"accepted": accepted, "refused": refused, "replayed": replayed}


def loop(ledger: PrivacyLedger, seed: int, out: str) -> dict:
    rng = np.random.default_rng(seed)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    i = 0
    while True:
        # contiguous and scattered record sets, small costs: the budget lasts
        if i % 2:
            start = int(rng.integers(0, 5000))
            records = np.arange(start, start + int(rng.integers(1, 400)))
        else:
            records = np.unique(rng.integers(0, 5000, int(rng.integers(1, 300))))
        entry = ledger.charge(records, 0.25, release_id=f"k{seed}-{os.getpid()}", batch=f"b{i}")
        line = json.dumps({"seq": entry.seq, "n": len(records), "first": int(records[0])})
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
        i += 1


def diskfull(ledger: PrivacyLedger, limit: int) -> dict:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    records = np.arange(0, 400_000, 2)  # 200k single-record ranges: a 3.2 MB entry
    try:
        ledger.charge(records, 1.0, release_id="big", batch="0")
    except Exception as exc:  # the outcome is what the test checks
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None}


def release_rows(
    ledger: PrivacyLedger, seed: int, rid: str, x_path: str, ids_path: str, out: str
) -> dict:
    x = np.load(x_path)
    rows = np.load(ids_path)
    batch = release(
        x[rows], rows, ledger, epsilon=2.0, lower=0.0, upper=1.0, seed=seed, release_id=rid
    )
    np.save(out, batch.data.numpy())
    return {"rows": len(rows), "replayed": batch.release.replayed}


def charge_pickled(args: tuple) -> bool:
    """For multiprocessing pools: charge through a ledger that arrived pickled."""
    ledger, records, epsilon = args
    try:
        ledger.charge(records, epsilon)
    except BudgetExceededError:
        return False
    return True


def main(argv: list[str]) -> int:
    mode, path, name, *rest = argv
    ledger = _open(path, name)
    if mode == "race":
        result = race(ledger, int(rest[0]), int(rest[1]), rest[2])
    elif mode == "loop":
        result = loop(ledger, int(rest[0]), rest[1])
    elif mode == "diskfull":
        result = diskfull(ledger, int(rest[0]))
    elif mode == "release":
        result = release_rows(ledger, int(rest[0]), rest[1], rest[2], rest[3], rest[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
