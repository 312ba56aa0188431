"""The relevance engine end to end (`relevance.run` and `noiseforge relevance ...`)
on the generated fixture with the model-free hashing encoder: the protocol's
invariants, per-task strategy switches, the report files and the CLI's errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from noiseforge.cli import main
from noiseforge.relevance import data
from noiseforge.relevance.fixture import make_fixture
from noiseforge.relevance.pipeline import (
    RUNGS,
    STEPS,
    SYSTEMS,
    TUNED,
    RunConfig,
    Rung,
    Strategies,
    ladder,
    run,
    split,
)


def _cfg(tmp_path, **kw) -> RunConfig:
    base = dict(
        out=str(tmp_path / "out"),
        encoder="hashing",
        fixture_rows=400,
        filter_folds=2,
        n_boot=50,
    )
    base.update(kw)
    return RunConfig.from_dict(base)


def test_split_keeps_queries_whole_and_unseen_languages_in_test(tmp_path):
    rows = pd.concat([make_fixture("QC", 600, seed=1), make_fixture("QI", 300, seed=2)])
    rows = rows.reset_index(drop=True)
    cfg = _cfg(tmp_path)
    parts = split(rows, ["en", "fr", "es", "pt"], cfg)
    assert sum(len(p) for p in parts.values()) == len(rows)
    keys = {name: set(p["query"].str.lower().str.strip()) for name, p in parts.items()}
    assert not keys["train"] & keys["dev"] and not keys["train"] & keys["test"]
    assert not keys["dev"] & keys["test"]
    assert set(parts["train"]["language"]) <= {"en", "fr", "es", "pt"}
    unseen = rows[~rows["language"].isin(["en", "fr", "es", "pt"])]
    assert set(unseen["id"]) <= set(parts["test"]["id"])


def test_a_query_shared_with_an_unseen_language_is_a_test_row(tmp_path):
    rows = make_fixture("QC", 200, seed=1)
    twin = rows[rows["language"] == "de"].iloc[0]
    extra = rows.iloc[:3].copy()
    extra["query"] = twin["query"].upper() + " "  # same query (case/space aside), in en
    extra["language"] = "en"
    extra["id"] = ["x1", "x2", "x3"]
    rows = pd.concat([rows, extra], ignore_index=True)
    for seed in range(5):
        parts = split(rows, ["en", "fr", "es", "pt"], _cfg(tmp_path, seed=seed))
        assert {"x1", "x2", "x3"} <= set(parts["test"]["id"])
    # the split depends on the queries, not on the order of the rows
    shuffled = rows.sample(frac=1.0, random_state=0).reset_index(drop=True)
    a = split(rows, ["en", "fr", "es", "pt"], _cfg(tmp_path))
    b = split(shuffled, ["en", "fr", "es", "pt"], _cfg(tmp_path))
    for name in ("train", "dev", "test"):
        assert set(a[name]["id"]) == set(b[name]["id"])


def test_run_writes_the_ablation_and_honours_switches(tmp_path):
    cfg = _cfg(
        tmp_path,
        strategies={"QC": "translate,mine,threshold", "QI": "filter"},
        unseen_languages=["de"],
    )
    lines = []
    result = run(cfg, progress=False, echo=lines.append)
    table = result.table
    assert list(dict.fromkeys(table["system"])) == ["all-relevant", *SYSTEMS]
    assert {"QC", "QC seen", "QC unseen", "QI", "QI seen", "QI unseen"} == set(table["column"])
    assert ((table["low"] <= table["f1"]) & (table["f1"] <= table["high"])).all()
    tuned = result.table_tuned
    assert list(dict.fromkeys(tuned["system"])) == ["all-relevant", *TUNED]
    assert result.log["QC"]["steps"]["baseline"]["dev_threshold"] > 0
    test = result.test
    qi = test["task"] == "QI"
    # QI: no translation, no mining, no threshold -> those rungs repeat the one below
    assert (test.loc[qi, "pred +TA"] == test.loc[qi, "pred baseline"]).all()
    assert (test.loc[qi, "pred +threshold"] == test.loc[qi, "pred +TA+SNS+SVF"]).all()
    assert result.log["QI"]["steps"]["+TA"] == {"off": True}
    assert result.log["QI"]["steps"]["+TA+SNS+SVF"]["removed"] >= 0
    assert "threshold" in result.log["QC"]["steps"]["+threshold"]
    assert any("GENERATED fixture" in line for line in lines)
    # files: report, table, plot, predictions, final training sets with provenance
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "| all-relevant |" in report and "QI: +TA off" in report
    assert "own threshold tuned on dev" in report
    assert json.loads((out / "run.json").read_text())["config"]["strategies"]["QI"] == ["filter"]
    assert (out / "review-QI.csv").exists() and not (out / "review-QC.csv").exists()
    final = data.load(out / "train-QC.jsonl")
    assert set(final["strategy"]) <= {"original", "translation", "semantic_negative"}
    assert len(pd.read_csv(out / "predictions.csv")) == len(test)
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_the_ladder_is_its_list_of_rungs():
    assert tuple(r.system for r in RUNGS) == SYSTEMS
    assert tuple(r.system for r in RUNGS if r.data) == TUNED
    assert [r.step for r in RUNGS] == [None, *STEPS]


def test_a_new_rung_is_one_more_entry(tmp_path, monkeypatch):
    def strict(climb, system):
        climb.threshold = 0.9
        climb.steps[system] = {"threshold": 0.9}

    rungs = (*ladder.RUNGS, Rung("+strict", None, strict, data=False))
    monkeypatch.setattr(ladder, "RUNGS", rungs)
    cfg = _cfg(tmp_path, tasks=["QC"], strategies={"QC": "none"})
    result = run(cfg, progress=False, echo=lambda line: None)
    assert list(dict.fromkeys(result.table["system"])) == ["all-relevant", *SYSTEMS, "+strict"]
    assert list(dict.fromkeys(result.table_tuned["system"])) == ["all-relevant", *TUNED]
    test = result.test
    assert (test["pred +strict"] == (test["p_final"] >= 0.9)).all()
    assert (test["pred +threshold"] == test["pred baseline"]).all()  # switched off
    assert result.log["QC"]["steps"]["+strict"] == {"threshold": 0.9}


def test_run_on_files_uses_only_labelled_rows(tmp_path):
    rows = make_fixture("QC", 400, seed=3)
    rows.loc[:9, "label"] = -1  # unlabelled (test-file) rows are set aside, not scored
    path = tmp_path / "qc.jsonl"
    data.write(rows, path)
    cfg = _cfg(tmp_path, data=[str(path)], train_languages=["en", "fr", "es", "pt"])
    lines = []
    result = run(cfg, progress=False, echo=lines.append)
    assert "10 unlabelled rows set aside" in lines[0]
    assert (
        len(result.test) + sum(s["baseline"]["train_rows"] for s in [result.log["QC"]["steps"]])
        < 400
    )
    assert np.isin(result.test["label"], [0, 1]).all()


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="translator 'babel'"):
        RunConfig.from_dict({"translator": "babel"})
    with pytest.raises(ValueError, match="unknown config key"):
        RunConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="unknown strategy"):
        Strategies.parse("translate,dance")
    with pytest.raises(ValueError, match="dev_fraction"):
        RunConfig.from_dict({"dev_fraction": 0.7})
    with pytest.raises(ValueError, match="both training and unseen"):
        run(_cfg(tmp_path, train_languages=["en", "de"], unseen_languages=["de"]), echo=print)
    with pytest.raises(ValueError, match="have no rows"):
        run(_cfg(tmp_path, train_languages=["xx"]), echo=print)
    with pytest.raises(ValueError, match=r"unseen language\(s\) \['itt'\] have no rows"):
        run(_cfg(tmp_path, unseen_languages=["de", "itt"]), echo=print)
    with pytest.raises(ValueError, match="filter_folds"):
        RunConfig.from_dict({"filter_folds": 1})
    with pytest.raises(ValueError, match="data must be a list"):
        RunConfig.from_dict({"data": "qc.jsonl"})
    augmented = make_fixture("QC", 60, seed=2)
    augmented.loc[:4, "strategy"] = "translation"
    augmented.loc[:4, "source_id"] = augmented.loc[5:9, "id"].to_numpy()
    aug_path = tmp_path / "augmented.jsonl"
    data.write(augmented, aug_path)
    with pytest.raises(ValueError, match=r"5 input rows are synthesized \(translation\)"):
        run(_cfg(tmp_path, data=[str(aug_path)]), echo=print)
    inside = tmp_path / "out" / "train-QC.jsonl"
    inside.parent.mkdir()
    data.write(make_fixture("QC", 50), inside)
    with pytest.raises(ValueError, match="inside the report folder"):
        run(_cfg(tmp_path, data=[str(inside)]), echo=print)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('encoder = "hashing"\nfixture_rows = 300\n[strategies]\nQC = ["mine"]\n')
    loaded = RunConfig.from_file(cfg, out=str(tmp_path / "o"))
    assert loaded.strategies["QC"] == Strategies(False, True, False, False)
    assert loaded.fixture_rows == 300 and loaded.out == str(tmp_path / "o")
    cfg.write_text('[strategies]\nQC = ["mine"]\nQI = "translate"\n')
    merged = RunConfig.from_file(cfg, strategies={"QC": Strategies.parse("none")})
    assert merged.strategies["QC"] == Strategies(False, False, False, False)
    assert merged.strategies["QI"] == Strategies(True, False, False, False)  # kept from the file


def test_cli_steps_write_new_files_and_never_overwrite_inputs(tmp_path, capsys):
    rows = make_fixture("QC", 300, seed=4)
    src = tmp_path / "qc.jsonl"
    data.write(rows, src)
    before = src.read_bytes()
    mined = tmp_path / "mined.jsonl"
    assert main(["relevance", "mine", str(src), "--out", str(mined), "--encoder", "hashing",
                 "--positive-share", "0.5", "--quiet"]) == 0  # fmt: skip
    out = data.load(mined)
    assert len(out) > len(rows) and "semantic negatives added" in capsys.readouterr().out
    assert abs(out["label"].mean() - 0.5) < 0.05
    filtered = tmp_path / "filtered.jsonl"
    review = tmp_path / "review.csv"
    assert main(["relevance", "filter", str(src), "--out", str(filtered), "--encoder", "hashing",
                 "--folds", "2", "--review", str(review)]) == 0  # fmt: skip
    kept = data.load(filtered)
    flagged = pd.read_csv(review) if review.stat().st_size else pd.DataFrame()
    assert len(kept) + len(flagged) == len(rows)
    # mining a mined file again gives new, unique ids
    again = tmp_path / "again.jsonl"
    assert main(["relevance", "mine", str(mined), "--out", str(again), "--encoder", "hashing",
                 "--positive-share", "0.4", "--quiet"]) == 0  # fmt: skip
    twice = data.load(again)
    assert twice["id"].is_unique and len(twice) > len(out)
    capsys.readouterr()
    # never overwrite an input (even with --overwrite), an output only with --overwrite
    mine = ["relevance", "mine", str(src), "--encoder", "hashing", "--quiet", "--out"]
    assert main([*mine, str(src), "--overwrite"]) == 2
    assert "is an input file" in capsys.readouterr().err
    untouched = tmp_path / "precious.jsonl"
    untouched.write_text("mine\n")
    assert main([*mine, str(untouched)]) == 2
    assert "exists: choose another file or pass --overwrite" in capsys.readouterr().err
    assert untouched.read_text() == "mine\n" and src.read_bytes() == before
    assert main([*mine, str(untouched), "--overwrite"]) == 0
    assert len(data.load(untouched)) > len(rows)


def test_cli_run_and_bad_arguments(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["relevance", "run", "--encoder", "hashing", "--out", str(out), "--quiet"]
    assert main([*args, "--strategies", "QC=dance"]) == 2
    assert "unknown strategy ['dance']" in capsys.readouterr().err
    assert main([*args, "--strategies", "QC"]) == 2
    assert "TASK=STEPS" in capsys.readouterr().err
    assert main(["relevance", "run", "--encoder", "nowhere/model"]) == 2
    assert "neither 'use', 'hashing'" in capsys.readouterr().err
    assert main(["relevance", "augment", str(tmp_path / "missing.jsonl"), "--out",
                 str(tmp_path / "x.jsonl"), "--languages", "de"]) == 2  # fmt: skip
    assert "missing.jsonl" in capsys.readouterr().err


def test_cli_train_then_evaluate(tmp_path, capsys):
    rows = make_fixture("QC", 500, seed=6)
    parts = split(rows, ["en", "fr", "es", "pt"], _cfg(tmp_path))
    paths = {}
    for name in ("train", "dev", "test"):
        paths[name] = tmp_path / f"{name}.jsonl"
        data.write(parts[name], paths[name])
    model = tmp_path / "qc.nfmodel"
    enc = ["--encoder", "hashing"]
    assert main(["relevance", "train", str(paths["train"]), "--dev", str(paths["dev"]),
                 "--model-out", str(model), *enc]) == 0  # fmt: skip
    assert "QC: threshold" in capsys.readouterr().out and model.exists()
    assert main(["relevance", "evaluate", str(paths["test"]), "--model", str(model), *enc,
                 "--seen", "en,fr,es,pt"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "thresholds (saved): QC" in out and "unseen" in out and "baseline_f1" in out
    # a model file is never replaced; train and dev must not share queries
    assert main(["relevance", "train", str(paths["train"]), "--model-out", str(model), *enc]) == 2
    assert "models are never replaced" in capsys.readouterr().err
    assert main(["relevance", "train", str(paths["train"]), "--dev", str(paths["train"]),
                 "--model-out", str(tmp_path / "m2"), *enc]) == 2  # fmt: skip
    assert "in both the training and the dev files" in capsys.readouterr().err
    assert main(["relevance", "evaluate", str(paths["test"]), "--model", str(paths["test"])]) == 2
    assert "not a saved EmbeddingMLP" in capsys.readouterr().err
    assert main(["relevance", "evaluate", str(paths["test"]), "--model", str(model)]) == 2
    assert "--encoder" in capsys.readouterr().err  # trained with hashing, loaded with USE
    # a dev row that is a translation of a training row (source_id) is caught too
    dev = parts["dev"].copy()
    twin = parts["train"].iloc[0]
    dev.loc[0, ["query", "source_id", "strategy", "language"]] = [
        "ganz anders",
        twin["id"],
        "translation",
        "de",
    ]
    dev.loc[0, "target"] = twin["target"]
    dev_path = tmp_path / "dev-leaky.jsonl"
    data.write(dev, dev_path)
    assert main(["relevance", "train", str(paths["train"]), "--dev", str(dev_path),
                 "--model-out", str(tmp_path / "m3"), *enc]) == 2  # fmt: skip
    assert "query families are in both" in capsys.readouterr().err


def test_run_with_an_llm_judge(tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed (optional)")
    from noiseforge.relevance.model import HFYesNoJudge
    from tests.support.hf_tiny import tiny_causal_lm

    rows = make_fixture("QC", 300, seed=0)
    texts = HFYesNoJudge.PROMPT.split() + rows["query"].tolist() + rows["target"].tolist()
    lm = tiny_causal_lm(tmp_path / "lm", texts)
    cfg = _cfg(
        tmp_path,
        tasks=["QC"],
        fixture_rows=300,
        model=f"llm-judge:{lm}",
        strategies={"QC": "threshold"},
    )
    result = run(cfg, progress=False, echo=lambda line: None)
    assert set(result.table["column"]) == {"QC", "QC seen", "QC unseen"}
    assert result.test["p_final"].between(0, 1).all()
    with pytest.raises(ValueError, match="model 'gpt'"):
        RunConfig.from_dict({"model": "gpt"})
