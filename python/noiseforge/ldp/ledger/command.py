"""``noiseforge ldp ledger show|verify|spent|import``: look after a shared privacy ledger.

LEDGER is an SQLite file or a ``postgresql://`` URL (``--name`` picks the
ledger's schema there). ``verify`` checks every row and re-derives every
record's total from the entries; it exits with status 2 and names the first
problem when the store was damaged or edited.
"""

from __future__ import annotations

import argparse
import datetime
import math

import numpy as np

from noiseforge.ldp.ledger.ledger import PrivacyLedger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ledger_command", required=True)
    show = sub.add_parser("show", help="budget, totals and the latest entries")
    verify = sub.add_parser("verify", help="check every row and every record's total")
    spent = sub.add_parser("spent", help="what some records have spent")
    imp = sub.add_parser("import", help="import a JSON-lines journal of an earlier version, once")
    for p in (show, verify, spent):
        p.add_argument("ledger", help="an SQLite file or a postgresql:// URL")
    spent.add_argument("records", nargs="+", type=int, help="record ids")
    show.add_argument("--last", type=int, default=10, help="entries to list (default 10)")
    show.add_argument("--release", default=None, help="list only this release id's entries")
    imp.add_argument("journal", help="the .jsonl journal")
    imp.add_argument("--into", required=True, help="the ledger (SQLite file or URL)")
    imp.add_argument("--epsilon-budget", type=float, default=None, help="for a new ledger")
    imp.add_argument("--delta-budget", type=float, default=None, help="for a new ledger")
    for p in (show, verify, spent, imp):
        p.add_argument("--name", default="noiseforge", help="PostgreSQL schema of the ledger")


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.6g}"


def run(args: argparse.Namespace) -> int:
    if args.ledger_command == "import":
        ledger = PrivacyLedger(
            args.epsilon_budget, args.delta_budget, path=args.into, name=args.name
        )
        n = ledger.import_journal(args.journal)
        print(f"imported {n} entries of {args.journal} into {ledger.location}")
        return 0
    ledger = PrivacyLedger(path=args.ledger, name=args.name)
    budget = f"epsilon {_fmt(ledger.epsilon_budget)}, delta {ledger.delta_budget:g}"
    if args.ledger_command == "spent":
        eps, delta = ledger.spent_many(np.asarray(args.records, dtype=np.int64))
        print(f"{ledger.location} (budget {budget})")
        for r, e, d in zip(args.records, eps.tolist(), delta.tolist(), strict=True):
            print(f"  record {r}: epsilon {_fmt(e)}, delta {d:g}")
        return 0
    audit = ledger.verify()
    print(f"{ledger.location}")
    print(f"  budget            {budget}")
    print(f"  entries           {audit.entries}")
    print(f"  records charged   {audit.records_charged} (in {audit.spans} spans)")
    print(f"  most spent        epsilon {_fmt(audit.max_epsilon)}, delta {audit.max_delta:g}")
    if args.ledger_command == "verify":
        print("  verified: every row is valid and every total equals its entries")
        return 0
    entries = ledger.entries(args.release)[-max(0, args.last) :] if args.last else []
    for e in entries:
        when = datetime.datetime.fromtimestamp(e.time).isoformat(timespec="seconds")
        print(
            f"  #{e.seq} {when} release {e.release_id} batch {e.batch}: {len(e.records)} "
            f"records, epsilon {_fmt(e.epsilon)}, delta {e.delta:g}, {e.mechanism}"
            + (f" ({e.note})" if e.note else "")
            + f"; by {e.origin}"
        )
    return 0
