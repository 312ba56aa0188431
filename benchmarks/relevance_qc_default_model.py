"""The default relevance model on the shared CIKM QC sample, competition protocol.

Train on en fr es ko pt ja (20 % of those queries held out, grouped by query, as the
seen-language test split), evaluate on the held-out split and on de it pl ar (unseen).
A further 15 % of the training queries (grouped) are a *threshold* split: the model
never trains on them and the decision threshold is tuned there, never on test rows.
Reports F1 with bootstrap CIs next to the all-relevant baseline, at 0.5 and with the
tuned threshold, the default without its label-statistics features (ablation), then
the effect of semantic negatives and self-validation filtering (paired CIs), AUCs and
wall times. The data is read from ../shared and never copied.

    PYTHONPATH=python python benchmarks/relevance_qc_default_model.py [--cache DIR] [--skip-strategies]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from noiseforge.relevance.embed import USEEncoder, embed_cached
from noiseforge.relevance.evaluate import ablation, format_ablation, paired_bootstrap
from noiseforge.relevance.filtering import self_validation_filter
from noiseforge.relevance.mining import add_semantic_negatives
from noiseforge.relevance.model import EmbeddingMLP, grouped_split, tune_threshold

SEEN = ("en", "fr", "es", "ko", "pt", "ja")
DATA = Path(__file__).resolve().parents[2] / "shared/data/cikm-qc-sample/train.jsonl"


def load(path: Path) -> pd.DataFrame:
    df = pd.read_json(path, lines=True).rename(
        columns={"origin_query": "query", "category_path": "target"}
    )
    return df.assign(id=df["id"].astype(str), source_id="", strategy="original")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", default=None, help="embedding cache dir (default: package cache)")
    ap.add_argument("--skip-strategies", action="store_true")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(
            f"no data at {args.data} (see ../shared/data/cikm-qc-sample/PROVENANCE.md)"
        )
    df = load(args.data)
    seen = df[df["language"].isin(SEEN)]
    tr, held = grouped_split(seen, 0.2, seed=0)
    train, held = seen[tr].reset_index(drop=True), seen[held].reset_index(drop=True)
    test = pd.concat([held, df[~df["language"].isin(SEEN)]], ignore_index=True)
    fit_rows, th_rows = grouped_split(train, 0.15, seed=1)
    train, dev = train[fit_rows].reset_index(drop=True), train[th_rows].reset_index(drop=True)
    print(f"rows: train {len(train)}, threshold dev {len(dev)}, test {len(test)}")
    enc = USEEncoder()

    t = time.perf_counter()
    texts = pd.unique(pd.concat([df["query"], df["target"]]).astype(str))
    embed_cached(enc, list(texts), cache_dir=args.cache)
    print(
        f"embedding {len(texts)} distinct texts (cached after the first run): {time.perf_counter() - t:.1f} s"
    )

    y_test, seen_test = test["label"].to_numpy(), test["language"].isin(SEEN).to_numpy()

    def run(name, train_df, **options):
        t0 = time.perf_counter()
        model = EmbeddingMLP(enc, cache_dir=args.cache, **options).fit(train_df)
        t1 = time.perf_counter()
        p_dev, p_test = model.predict_proba(dev), model.predict_proba(test)
        t2 = time.perf_counter()
        th, _ = tune_threshold(dev["label"], p_dev)
        auc = "  ".join(
            f"{part} {roc_auc_score(y_test[m], p_test[m]):.3f}"
            for part, m in (("all", slice(None)), ("seen", seen_test), ("unseen", ~seen_test))
        )
        print(
            f"{name}: fit {t1 - t0:.1f} s ({len(train_df)} rows), predict {t2 - t1:.1f} s "
            f"({len(dev) + len(test)} rows), dev threshold {th:.3f}; test AUC {auc}"
        )
        return (p_test >= 0.5).astype(int), (p_test >= th).astype(int)

    systems = {}
    systems["EmbeddingMLP"], systems["+threshold"] = run("EmbeddingMLP", train)
    _, systems["+threshold -label features"] = run(
        "-label features", train, label_features=False, hidden=(512, 128), dropout=0.3
    )
    if not args.skip_strategies:
        t = time.perf_counter()
        sns = add_semantic_negatives(train, enc, positive_share=0.6, cache_dir=args.cache)
        print(f"mining: {len(sns) - len(train)} negatives in {time.perf_counter() - t:.1f} s")
        systems["+SNS"], systems["+SNS +threshold"] = run("+SNS", sns)
        t = time.perf_counter()
        res = self_validation_filter(
            train, lambda: EmbeddingMLP(enc, cache_dir=args.cache), k=5, confidence=0.8
        )
        flagged = res.flags["flagged"].to_numpy()
        print(
            f"filtering: {flagged.sum()} of {len(train)} rows flagged in {time.perf_counter() - t:.1f} s"
        )
        print(res.report.to_string(index=False))
        systems["+SVF"], systems["+SVF +threshold"] = run("+SVF", res.kept)
    table = ablation(test, systems, seen_languages=SEEN, n_boot=args.n_boot)
    print(format_ablation(table.replace({"column": {"QC seen": "QC seen (held out)"}}), digits=4))
    print("(rows: system; cells: F1 [95% CI] (change vs the row above [paired 95% CI]))")
    # the acceptance target is measured against all-relevant, not the row above
    for part, m in (("all", slice(None)), ("seen", seen_test), ("unseen", ~seen_test)):
        d = paired_bootstrap(
            y_test[m],
            np.ones_like(y_test[m]),
            systems["+threshold"][m],
            groups=test["query"].to_numpy()[m],
            n_boot=args.n_boot,
        )
        print(
            f"+threshold vs all-relevant, {part}: {d['diff']:+.4f} "
            f"[{d['low']:+.4f}, {d['high']:+.4f}] (target of issue 6: +0.04)"
        )


if __name__ == "__main__":
    main()
