"""Self-validation filtering on Ray: the local engine's result, from one task per fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from noiseforge.cli import main
from noiseforge.relevance.data import load, write
from noiseforge.relevance.filtering import self_validation_filter
from noiseforge.relevance.fixture import make_fixture
from tests.support.faults import run_against_no_ray_cluster


@pytest.fixture(scope="module")
def noisy():
    """The generated fixture with 8 % of its labels flipped."""
    df = make_fixture("QC", 160, seed=3)
    flipped = np.random.default_rng(0).random(len(df)) < 0.08
    df.loc[flipped, "label"] = 1 - df.loc[flipped, "label"]
    return df


def _fast_model(cache_dir):
    from noiseforge.relevance.embed import HashingEncoder
    from noiseforge.relevance.model import EmbeddingMLP

    enc = HashingEncoder(dim=64)
    return lambda: EmbeddingMLP(
        enc, cache_dir=cache_dir, hidden=(32,), batch_size=64, max_epochs=25, seed=0
    )


def test_ray_result_equals_the_local_engines(ray_cluster, noisy, tmp_path):
    from noiseforge.distributed import self_validation_filter_ray

    factory = _fast_model(tmp_path / "cache")
    opts = dict(k=3, seeds=(0, 1), confidence=0.6, action="review")
    local = self_validation_filter(noisy, factory, review_path=tmp_path / "local.csv", **opts)
    ray = self_validation_filter_ray(noisy, factory, review_path=tmp_path / "ray.csv", **opts)
    pd.testing.assert_frame_equal(ray.flags, local.flags, check_exact=True)
    pd.testing.assert_frame_equal(ray.report, local.report)
    pd.testing.assert_frame_equal(ray.kept, local.kept)
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()
    assert local.flags["votes_contradicted"].max() == 2  # the case votes


def test_several_models_vote_as_locally(ray_cluster):
    from noiseforge.distributed import self_validation_filter_ray

    df = pd.DataFrame(
        {
            "id": ["p0.95-a", "p0.05-b", "p0.95-c", "p0.5-d", "p0.5-e", "p0.05-f"],
            "query": list("abcdef"),
            "language": ["en", "en", "fr", "fr", "en", "fr"],
            "label": [1, 1, 0, 1, 0, 0],
        }
    )
    opts = dict(k=2, seeds=(0, 1), confidence=0.9, band=(0.4, 0.6))
    local = self_validation_filter(df, [_ProbaIsId, _ProbaIsId], **opts)
    ray = self_validation_filter_ray(df, [_ProbaIsId, _ProbaIsId], **opts)
    pd.testing.assert_frame_equal(ray.flags, local.flags, check_exact=True)
    pd.testing.assert_frame_equal(ray.kept, local.kept)
    assert ray.flags["votes_boundary"].tolist() == [0, 0, 0, 4, 4, 0]
    with pytest.raises(ValueError, match="review_path"):
        self_validation_filter_ray(df, _ProbaIsId, action="review")


class _ProbaIsId:
    """A fake model whose p(relevant) is read from the row id: 'p0.95-...' -> 0.95."""

    def fit(self, df_train, df_valid=None):
        return self

    def predict_proba(self, df):
        return np.array([float(i.split("-")[0][1:]) for i in df["id"]])


def test_the_command_with_engine_ray_writes_what_engine_local_writes(
    ray_cluster, noisy, tmp_path, capsys, monkeypatch
):
    # the Ray tasks embed into the cache folder of this process, not their own default
    monkeypatch.setenv("NOISEFORGE_CACHE", str(tmp_path / "cache"))
    data = write(noisy, tmp_path / "train.jsonl")
    outs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.jsonl"
        cmd = ["relevance", "filter", str(data), "--out", str(out), "--encoder", "hashing"]
        cmd += ["--folds", "3", "--confidence", "0.6", "--quiet", "--engine", engine]
        assert main(cmd) == 0
        outs[engine] = out
    capsys.readouterr()
    assert outs["ray"].read_bytes() == outs["local"].read_bytes()
    assert len(load([str(outs["ray"])])) < len(noisy)  # some rows were filtered out
    assert any((tmp_path / "cache").rglob("*.npy"))


def test_the_engine_is_chosen_by_the_command_line_only(tmp_path, noisy):
    import argparse

    from noiseforge._common.argtypes import UsageError
    from noiseforge.relevance import command

    args = argparse.Namespace(relevance_command="filter", engine="ray")
    with pytest.raises(UsageError, match="set up by the noiseforge command line"):
        command.run(args)
    data = write(noisy, tmp_path / "train.jsonl")
    cmd = ["relevance", "filter", str(data), "--out", str(tmp_path / "o.jsonl")]
    assert main([*cmd, "--ray-address", "127.0.0.1:9"]) == 2  # without --engine ray
    assert main([*cmd, "--engine", "spark"]) == 2


def test_a_bad_address_fails_with_one_line(tmp_path, noisy):
    data = write(noisy, tmp_path / "train.jsonl")
    argv = ["relevance", "filter", str(data), "--out", str(tmp_path / "o.jsonl")]
    run_against_no_ray_cluster([*argv, "--encoder", "hashing", "--quiet"])
    assert not (tmp_path / "o.jsonl").exists()
