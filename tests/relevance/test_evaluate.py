"""Evaluation: positive-class F1, bootstrap intervals (plain and paired), the ablation table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from noiseforge.relevance.evaluate import (
    ablation,
    bootstrap_ci,
    evaluate,
    format_ablation,
    paired_bootstrap,
    prf,
)


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.68).astype(int)
    good = np.where(rng.random(n) < 0.85, y, 1 - y)
    return y, good


def test_prf_matches_sklearn():
    y, p = _data()
    r = prf(y, p)
    assert r["f1"] == pytest.approx(f1_score(y, p))
    assert r["precision"] == pytest.approx(precision_score(y, p))
    assert r["recall"] == pytest.approx(recall_score(y, p))
    assert prf(y, np.ones_like(y))["recall"] == 1.0
    with pytest.raises(ValueError, match="0/1"):
        prf(y, p * 2)


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    y, p = _data()
    f1, lo, hi = bootstrap_ci(y, p, seed=1)
    assert lo < f1 < hi and hi - lo < 0.1
    assert (f1, lo, hi) == bootstrap_ci(y, p, seed=1)
    assert bootstrap_ci(y, p, seed=2) != (f1, lo, hi)
    # resampling whole groups of 10 correlated rows widens the interval
    groups = np.repeat(np.arange(60), 10)
    yg, pg = np.repeat(y[:60], 10), np.repeat(p[:60], 10)
    _, glo, ghi = bootstrap_ci(yg, pg, groups=groups, seed=1)
    _, rlo, rhi = bootstrap_ci(yg, pg, seed=1)
    assert ghi - glo > 2 * (rhi - rlo)


def test_paired_bootstrap():
    y, good = _data()
    same = paired_bootstrap(y, good, good)
    assert same["diff"] == same["low"] == same["high"] == 0.0
    better = np.where(
        np.random.default_rng(5).random(len(y)) < 0.5, y, good
    )  # fixes half the errors
    d = paired_bootstrap(y, good, better, seed=0)
    assert d["diff"] == pytest.approx(prf(y, better)["f1"] - prf(y, good)["f1"])
    assert 0 < d["low"] <= d["diff"] <= d["high"] and d["p_le_0"] < 0.025
    # paired CI of the difference is tighter than the two separate intervals suggest
    _, alo, ahi = bootstrap_ci(y, good)
    assert d["high"] - d["low"] < ahi - alo


def _table(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y, good = _data(n, seed)
    langs = rng.choice(["en", "fr", "de", "pl"], n)
    df = pd.DataFrame(
        {"task": "QC", "language": langs, "query": [f"q{i // 2}" for i in range(n)], "label": y}
    )
    return df, good


def test_evaluate_reports_baseline_and_groups():
    df, pred = _table()
    r = evaluate(df, pred, seen_languages=["en", "fr"], n_boot=200)
    assert set(r["group"]) == {"all", "seen", "unseen", "en", "fr", "de", "pl"}
    row = r.set_index("group").loc["unseen"]
    mask = df["language"].isin(["de", "pl"])
    assert row["f1"] == pytest.approx(prf(df["label"][mask], pred[mask])["f1"])
    assert row["baseline_f1"] == pytest.approx(
        prf(df["label"][mask], np.ones(mask.sum(), int))["f1"]
    )
    assert row["delta_vs_baseline"] == pytest.approx(row["f1"] - row["baseline_f1"])
    assert row["f1_low"] <= row["f1"] <= row["f1_high"]


def test_ablation_table_markdown():
    df, good = _table()
    better = np.where(np.random.default_rng(1).random(len(df)) < 0.5, df["label"], good)
    t = ablation(df, {"baseline": good, "+TA": better}, seen_languages=["en", "fr"], n_boot=200)
    assert list(dict.fromkeys(t["system"])) == ["all-relevant", "baseline", "+TA"]
    assert set(t["column"]) == {"QC", "QC seen", "QC unseen"}
    ta = t[(t.system == "+TA") & (t.column == "QC")].iloc[0]
    assert ta["delta"] == pytest.approx(
        ta["f1"] - t[(t.system == "baseline") & (t.column == "QC")].iloc[0]["f1"]
    )
    md = format_ablation(t)
    lines = md.splitlines()
    assert lines[0] == "| system | QC | QC seen | QC unseen |"
    assert len(lines) == 5 and lines[3].startswith("| baseline | 0.")
    assert "(+" in lines[4]
