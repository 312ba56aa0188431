"""The relevance commands on Ray: ``relevance mine --engine ray`` writes the local
engine's file, and ``relevance.run`` with the Ray engine builds the local engine's
training sets and predictions; ``relevance_engine`` fails at once without a cluster."""

from __future__ import annotations

from noiseforge.cli import main
from noiseforge.relevance.data import write
from noiseforge.relevance.fixture import make_fixture
from noiseforge.relevance.pipeline import RunConfig, run
from tests.support.faults import run_against_no_ray_cluster


def test_mine_with_engine_ray_writes_what_engine_local_writes(
    ray_cluster, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("NOISEFORGE_CACHE", str(tmp_path / "cache"))
    data = write(make_fixture("QC", 200, seed=4), tmp_path / "train.jsonl")
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / f"{engine}.jsonl"
        cmd = ["relevance", "mine", str(data), "--out", str(outs[engine])]
        assert main([*cmd, "--encoder", "hashing", "--quiet", "--engine", engine]) == 0
    capsys.readouterr()
    assert outs["ray"].read_bytes() == outs["local"].read_bytes()
    assert "semantic_negative" in outs["ray"].read_text()


def test_the_pipeline_on_ray_trains_on_the_local_engines_rows(ray_cluster, tmp_path):
    from noiseforge.distributed.engine import relevance_engine

    def cfg(name: str) -> RunConfig:
        return RunConfig.from_dict(
            dict(
                out=str(tmp_path / name),
                encoder="hashing",
                fixture_rows=300,
                filter_folds=2,
                n_boot=20,
                positive_share=0.3,
                strategies={"QC": "translate,mine,filter,threshold", "QI": "mine"},
                unseen_languages=["de"],
            )
        )

    local = run(cfg("local"), progress=False, echo=lambda line: None)
    ray = run(cfg("ray"), progress=False, echo=lambda line: None, engine=relevance_engine())
    for name in ("train-QC.jsonl", "train-QI.jsonl", "predictions.csv"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert ray.table.equals(local.table)
    assert ray.log["QC"]["steps"]["+TA+SNS"]["added"] > 0  # mining did add rows
    assert ray.log["QI"]["steps"]["+TA+SNS"]["added"] > 0


def test_every_relevance_command_refuses_a_bad_address_in_one_line(tmp_path):
    data = write(make_fixture("QC", 40, seed=1), tmp_path / "train.jsonl")
    for step in ("mine", "augment"):
        argv = ["relevance", step, str(data), "--out", str(tmp_path / f"{step}.jsonl")]
        if step == "augment":
            argv += ["--languages", "de", "--best-effort"]
        run_against_no_ray_cluster([*argv, "--quiet"])
        assert not (tmp_path / f"{step}.jsonl").exists()
    run_against_no_ray_cluster(["relevance", "run", "--out", str(tmp_path / "r"), "--quiet"])
    assert not (tmp_path / "r").exists()
    model = str(tmp_path / "m.pt")
    assert main(["relevance", "train", str(data), "--model-out", model, "--engine", "ray"]) == 2
