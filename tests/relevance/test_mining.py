"""Semantic negative sampling: never a known positive (of the query or a translation), balance, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noiseforge.relevance.embed import HashingEncoder
from noiseforge.relevance.filtering import query_groups
from noiseforge.relevance.fixture import make_fixture
from noiseforge.relevance.mining import (
    add_semantic_negatives,
    mine_semantic_negatives,
    negatives_needed,
)
from noiseforge.relevance.schema import COLUMNS

WORDS = ["red", "phone", "case", "pan", "shoe", "watch", "band", "bag", "lamp"]


@st.composite
def tables(draw):
    n = draw(st.integers(3, 30))
    rows = []
    for i in range(n):
        q = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)))
        t = ",".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)))
        src = f"r{draw(st.integers(0, i - 1))}" if i and draw(st.integers(0, 3)) == 0 else ""
        if src:  # a translation of an earlier row: new query text, same target and label
            j = int(src[1:])
            q, t = f"tr{i} " + rows[j]["query"], rows[j]["target"]
        rows.append(
            {
                "id": f"r{i}",
                "task": "QC",
                "language": "en",
                "query": q,
                "target": t,
                "label": rows[int(src[1:])]["label"] if src else draw(st.integers(0, 1)),
                "source_id": src,
            }
        )
    return pd.DataFrame(rows)


@settings(max_examples=40, deadline=None)
@given(tables(), st.integers(1, 3), st.floats(0.5, 2.0))
def test_mined_negatives_are_never_known_targets_of_the_family(tmp_path_factory, df, lo, ratio):
    cache = tmp_path_factory.getbasetemp() / "emb"
    mined = mine_semantic_negatives(
        df,
        HashingEncoder(16),
        rank_window=(lo, 10),
        ratio=ratio,
        positive_share=None,
        max_per_row=5,
        cache_dir=cache,
        progress=False,
    )
    fam = query_groups(df)
    known = {(int(f), t) for f, t in zip(fam, df["target"], strict=True)}
    fam_of_id = dict(zip(df["id"], fam, strict=True))
    for r in mined.itertuples():
        assert (int(fam_of_id[r.source_id]), r.target) not in known
        src = df.set_index("id").loc[r.source_id]
        assert src["label"] == 1 and r.query == src["query"] and r.label == 0
    assert not mined.duplicated(["source_id", "target"]).any()


def _fixture():
    df = make_fixture("QC", 300, seed=2)
    return df


def test_mining_reaches_the_positive_share_and_is_seeded(tmp_path):
    df = _fixture()
    enc = HashingEncoder(32)
    kw = dict(rank_window=(1, 30), ratio=2.0, max_per_row=3, cache_dir=tmp_path, progress=False)
    mined = mine_semantic_negatives(df, enc, positive_share=0.5, seed=1, **kw)
    n_pos, n_neg = int(df["label"].sum()), int((df["label"] == 0).sum())
    assert len(mined) == negatives_needed(n_pos, n_neg, 0.5) > 0
    out = add_semantic_negatives(df, enc, positive_share=0.5, seed=1, **kw)
    assert out["label"].mean() == pytest.approx(0.5, abs=0.01)
    assert list(mined.columns) == list(COLUMNS)
    assert (mined["strategy"] == "semantic_negative").all() and mined["id"].is_unique
    assert mined["score"].between(-1, 1).all()
    again = mine_semantic_negatives(df, enc, positive_share=0.5, seed=1, **kw)
    pd.testing.assert_frame_equal(mined, again)
    other = mine_semantic_negatives(df, enc, positive_share=0.5, seed=2, **kw)
    assert set(other["id"]) != set(mined["id"])
    assert len(mine_semantic_negatives(df, enc, n_negatives=7, **kw)) == 7


def test_ratio_threshold_is_respected(tmp_path):
    df = _fixture()
    enc = HashingEncoder(32)
    mined = mine_semantic_negatives(
        df, enc, ratio=0.95, positive_share=None, max_per_row=5, cache_dir=tmp_path, progress=False
    )
    src = df.set_index("id").loc[mined["source_id"]]
    pos_sim = np.sum(enc.encode(list(src["query"])) * enc.encode(list(src["target"])), axis=1)
    assert (mined["score"].to_numpy() < 0.95 * pos_sim + 1e-5).all()


def test_negatives_needed():
    assert negatives_needed(70, 30, 0.5) == 40
    assert negatives_needed(50, 60, 0.5) == 0
    with pytest.raises(ValueError):
        negatives_needed(1, 1, 0)


def _exact_search(qvec, tvec, k, exclude):
    """Brute-force search step: cosine of unit rows, excluded ids never returned, best
    first with ties by lower id, -1/NaN padding (the HNSW search's contract)."""
    scores = (qvec.astype(np.float64) @ tvec.astype(np.float64).T).astype(np.float32)
    ids = np.full((len(qvec), k), -1, dtype=np.int64)
    out = np.full((len(qvec), k), np.nan, dtype=np.float32)
    for r, e in enumerate(exclude):
        ok = np.setdiff1d(np.arange(len(tvec)), e)
        order = ok[np.lexsort((ok, -scores[r, ok]))][:k]
        ids[r, : len(order)], out[r, : len(order)] = order, scores[r, order]
    return ids, out


def test_the_search_step_is_pluggable_and_exact_search_gives_the_default_rows(tmp_path):
    df = _fixture()  # 12 distinct targets: the default HNSW beam covers them, it is exact
    enc = HashingEncoder(32)
    calls = []

    def spy(qvec, tvec, k, exclude):
        calls.append((qvec.shape, tvec.shape, k, len(exclude)))
        return _exact_search(qvec, tvec, k, exclude)

    kw = dict(rank_window=(1, 30), ratio=2.0, max_per_row=3, cache_dir=tmp_path, progress=False)
    default = mine_semantic_negatives(df, enc, positive_share=None, **kw)
    exact = mine_semantic_negatives(df, enc, positive_share=None, search=spy, **kw)
    n_pos, n_targets = int(df["label"].sum()), df["target"].nunique()
    assert calls == [((n_pos, 32), (n_targets, 32), min(30, n_targets), n_pos)]
    assert len(default) > 20
    pd.testing.assert_frame_equal(exact.drop(columns="score"), default.drop(columns="score"))
    np.testing.assert_allclose(exact["score"], default["score"], atol=1e-6)

    # a search that finds nothing mines nothing
    def nothing(qvec, tvec, k, exclude):
        return np.full((len(qvec), k), -1), np.full((len(qvec), k), np.nan, np.float32)

    assert mine_semantic_negatives(df, enc, positive_share=None, search=nothing, **kw).empty
