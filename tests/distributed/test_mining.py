"""Semantic-negative mining and embeddings on Ray: the local engine's rows, exclusions kept."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from noiseforge.index import HNSWIndex
from noiseforge.relevance.embed import HashingEncoder
from noiseforge.relevance.filtering import query_groups
from noiseforge.relevance.fixture import make_fixture
from noiseforge.relevance.mining import add_semantic_negatives, mine_semantic_negatives

WORDS = [f"w{i}" for i in range(40)]


def _synthetic(n_targets: int, n_rows: int, seed: int, task: str = "QC") -> pd.DataFrame:
    """Rows over ``n_targets`` random 3-word targets; queries share words with their
    target; some rows are translations (``source_id``) of earlier ones."""
    rng = np.random.default_rng(seed)
    targets = [" ".join(rng.choice(WORDS, 3, replace=False)) for _ in range(n_targets)]
    rows = []
    for i in range(n_rows):
        t = targets[int(rng.integers(n_targets))]
        words = t.split()
        q = " ".join([words[int(rng.integers(3))], str(rng.choice(WORDS))])
        src = ""
        if i > 5 and rng.random() < 0.15:
            j = int(rng.integers(i))
            src, q, t = rows[j]["id"], "tr " + rows[j]["query"], rows[j]["target"]
        rows.append(
            {
                "id": f"{task}-{i}",
                "task": task,
                "language": "en",
                "query": q,
                "target": t,
                "label": int(rng.random() < 0.7),
                "source_id": src,
            }
        )
    return pd.DataFrame(rows)


KW = dict(rank_window=(2, 20), ratio=1.5, positive_share=None, max_per_row=3, progress=False)


# ---------------------------------------------------------------------- no Ray needed
def test_merge_topk_orders_by_score_then_global_id_and_pads():
    from noiseforge.distributed.mining import merge_topk

    a = (np.array([[4, 1, -1]]), np.array([[0.9, 0.5, np.nan]], dtype=np.float32))
    b = (np.array([[2, 3]]), np.array([[0.9, 0.7]], dtype=np.float32))
    ids, scores = merge_topk([a, b], 4)
    assert ids.tolist() == [[2, 4, 3, 1]]  # 0.9 tie: the lower global id first
    np.testing.assert_array_equal(scores, np.array([[0.9, 0.9, 0.7, 0.5]], dtype=np.float32))
    short = (np.array([[5, -1]]), np.array([[0.2, np.nan]], dtype=np.float32))
    ids, scores = merge_topk([short, (np.array([[-1]]), np.array([[np.nan]], np.float32))], 3)
    assert ids.tolist() == [[5, -1, -1]] and np.isnan(scores[0, 1:]).all()


def test_shards_are_stable_and_in_range():
    from noiseforge.distributed.mining import shard_of

    texts = [f"target {i}" for i in range(500)]
    s = shard_of(texts, 4)
    assert s.dtype == np.int64 and set(s.tolist()) == {0, 1, 2, 3}
    assert np.array_equal(s, shard_of(list(reversed(texts)), 4)[::-1])  # per text, not position
    assert (shard_of(texts, 1) == 0).all()
    assert min(np.bincount(s)) > 80  # spread, not one shard


# ---------------------------------------------------------------------- on Ray
def test_embed_ray_equals_encode_writes_parquet_and_uses_the_cache(ray_cluster, tmp_path):
    import pyarrow.parquet as pq

    from noiseforge.distributed.embed import embed_ray

    enc = HashingEncoder(16)
    texts = [f"red shoe {i % 23}" for i in range(60)] + ["", "Red SHOE 1"]
    out = tmp_path / "emb.parquet"
    got = embed_ray(texts, enc, workers=2, block_rows=7, out=out, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(got, enc.encode(texts))
    table = pq.read_table(out).to_pydict()
    assert table["text"] == list(dict.fromkeys(texts))  # distinct, in first-seen order
    np.testing.assert_array_equal(np.array(table["vector"], np.float32), enc.encode(table["text"]))
    # every text is now in the cache: an encoder of the same name that cannot encode
    # works (a factory: built in each actor)
    again = embed_ray(texts[::-1], lambda: _Refusing(16), workers=2, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again, got[::-1])
    with pytest.raises(RuntimeError, match="refusing"):  # a new text: it is called
        embed_ray(["new text"], _Refusing(16), workers=1, cache_dir=tmp_path / "c")


class _Refusing(HashingEncoder):
    """HashingEncoder's name and dim, but encoding fails: only cached texts work."""

    def encode(self, texts):
        raise RuntimeError("refusing to encode")


def test_mining_with_one_shard_equals_the_local_engine_bit_for_bit(ray_cluster, tmp_path):
    from noiseforge.distributed.mining import mine_semantic_negatives_ray

    # 400 distinct targets > the beam (128): an approximate search, same graph on both sides
    df = pd.concat([_synthetic(400, 700, 0), _synthetic(60, 150, 1, task="QI")], ignore_index=True)
    enc = HashingEncoder(32)
    for kw in (dict(KW, seed=3), dict(rank_window=(3, 30), ratio=0.95, positive_share=0.6)):
        kw = dict(kw, cache_dir=tmp_path / "c", progress=False)
        local = mine_semantic_negatives(df, enc, **kw)
        ray = mine_semantic_negatives_ray(df, enc, shards=1, workers=2, **kw)
        assert len(local) > 20
        pd.testing.assert_frame_equal(ray, local, check_exact=True)


def test_sharded_exact_search_equals_the_local_engine_and_keeps_the_rules(ray_cluster, tmp_path):
    from noiseforge.distributed.mining import mine_semantic_negatives_ray, shard_of

    # <= 128 targets per task: the beam covers each index, so every search is exact
    df = pd.concat([_synthetic(120, 400, 2), make_fixture("QI", 200, seed=4)], ignore_index=True)
    enc = HashingEncoder(32)
    kw = dict(KW, seed=1, cache_dir=tmp_path / "c")
    local = mine_semantic_negatives(df, enc, **kw)
    shard_dir = tmp_path / "shards"
    ray = mine_semantic_negatives_ray(df, enc, shards=3, workers=2, shard_dir=shard_dir, **kw)
    pd.testing.assert_frame_equal(ray, local, check_exact=True)
    _assert_rules(df, ray, enc, kw["rank_window"], kw["ratio"])
    # the shard indexes are kept in the given folder: each holds its hash's targets
    qc = pd.unique(df.loc[df["task"] == "QC", "target"].astype(str))
    (job,) = shard_dir.iterdir()  # the job's own folder, kept
    files = sorted(job.glob("*QC.shard*of3.hnsw"))
    assert len(files) == 3
    sizes = [len(HNSWIndex.load(f)) for f in files]
    assert sizes == np.bincount(shard_of(qc, 3), minlength=3).tolist()


def _assert_rules(df, mined, enc, rank_window, ratio):
    """Against exact (numpy) search: no (family, known target) pair mined, each mined
    target within the window of its query's admissible ranking and below the ratio."""
    lo, hi = rank_window
    fam = query_groups(df)
    known = {(t, int(f), g) for t, f, g in zip(df["task"], fam, df["target"], strict=True)}
    fam_of = dict(zip(df["id"], fam, strict=True))
    src = df.set_index("id")
    assert len(mined) > 20
    for r in mined.itertuples():
        f = int(fam_of[r.source_id])
        assert (r.task, f, r.target) not in known
        s = src.loc[r.source_id]
        assert s["label"] == 1 and s["query"] == r.query
        targets = pd.unique(df.loc[df["task"] == r.task, "target"].astype(str))
        admissible = [t for t in targets if (r.task, f, t) not in known]
        q = enc.encode([r.query])[0]
        cos = enc.encode(admissible) @ q
        mined_cos = cos[admissible.index(r.target)]
        assert mined_cos == pytest.approx(r.score, abs=1e-5)
        better = int((cos > mined_cos + 1e-5).sum())
        assert better <= hi - 1  # rank <= hi
        assert int((cos >= mined_cos - 1e-5).sum()) >= lo  # rank >= lo
        assert r.score < ratio * float(enc.encode([s["target"]])[0] @ q) + 1e-5


def test_add_and_the_engine_equal_the_local_ones(ray_cluster, tmp_path):
    from noiseforge.distributed.engine import relevance_engine

    df = make_fixture("QC", 200, seed=5).drop(columns=["source_id", "strategy"])
    enc = HashingEncoder(32)
    kw = dict(positive_share=0.5, cache_dir=tmp_path / "c", progress=False)
    engine = relevance_engine().mine  # the running instance
    pd.testing.assert_frame_equal(
        engine(df, enc, shards=2, **kw), add_semantic_negatives(df, enc, **kw), check_exact=True
    )


def test_bad_arguments_fail_with_a_clear_error_before_any_work(ray_cluster):
    from noiseforge.distributed.embed import embed_ray
    from noiseforge.distributed.mining import mine_semantic_negatives_ray

    df = make_fixture("QC", 40, seed=0)
    enc = HashingEncoder(8)
    with pytest.raises(ValueError, match="shards must be an int >= 1, got 0"):
        mine_semantic_negatives_ray(df, enc, shards=0)
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        mine_semantic_negatives_ray(df, enc, workers=1.5)
    with pytest.raises(ValueError, match="rank_window"):
        mine_semantic_negatives_ray(df, enc, rank_window=(5, 2))
    with pytest.raises(ValueError, match="block_rows must be an int >= 1"):
        embed_ray(["a"], enc, block_rows=0)
    locked = HashingEncoder(8)
    locked.lock = threading.Lock()
    with pytest.raises(TypeError, match="zero-argument factory"):
        embed_ray(["a"], locked)
    with pytest.raises(TypeError, match="has no 'name'"):
        embed_ray([], lambda: object())
    with pytest.raises(TypeError, match="has no 'encode'"):
        embed_ray(["a"], _NoEncode())
    with pytest.raises(RuntimeError, match=r"could not build its encoder: .*has no 'name'"):
        embed_ray(["a"], lambda: object(), workers=1)  # the factory fails in the actor


class _NoEncode:
    name, dim = "no-encode", 4
