"""The default relevance model on the shared CIKM QC sample, competition protocol.

Train on en fr es ko pt ja (20 % of those queries held out, grouped by query, as the
seen-language dev split), evaluate on the held-out split and on de it pl ar (unseen).
Reports F1 with bootstrap CIs next to the all-relevant baseline, with and without a
dev-tuned threshold, then the effect of semantic negatives and self-validation
filtering (paired CIs), and wall times. The data is read from ../shared and never copied.

    PYTHONPATH=python python benchmarks/relevance_qc_default_model.py [--cache DIR] [--skip-strategies]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from noiseforge.relevance.embed import USEEncoder, embed_cached
from noiseforge.relevance.evaluate import ablation, format_ablation
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
    tr, dev = grouped_split(seen, 0.2, seed=0)
    train, dev = seen[tr].reset_index(drop=True), seen[dev].reset_index(drop=True)
    test = pd.concat([dev, df[~df["language"].isin(SEEN)]], ignore_index=True)
    enc = USEEncoder()

    t = time.perf_counter()
    texts = pd.unique(pd.concat([df["query"], df["target"]]).astype(str))
    embed_cached(enc, list(texts), cache_dir=args.cache)
    print(
        f"embedding {len(texts)} distinct texts (cached after the first run): {time.perf_counter() - t:.1f} s"
    )

    def run(name, train_df):
        t0 = time.perf_counter()
        model = EmbeddingMLP(enc, cache_dir=args.cache).fit(train_df)
        p_dev, p_test = model.predict_proba(dev), model.predict_proba(test)
        th, _ = tune_threshold(dev["label"], p_dev)
        print(
            f"{name}: fit {time.perf_counter() - t0:.1f} s, {len(train_df)} rows, dev threshold {th:.3f}"
        )
        return (p_test >= 0.5).astype(int), (p_test >= th).astype(int)

    systems = {}
    systems["EmbeddingMLP"], systems["+threshold"] = run("EmbeddingMLP", train)
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
    print(format_ablation(table.replace({"column": {"QC seen": "QC seen (dev)"}}), digits=4))
    print("(rows: system; cells: F1 [95% CI] (change vs the row above [paired 95% CI]))")


if __name__ == "__main__":
    main()
