"""Data layer: competition format round trips, validation errors with line numbers, fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from noiseforge.relevance import data
from noiseforge.relevance.fixture import FAMILIES, LANGUAGES, make_fixture
from noiseforge.relevance.schema import COLUMNS

SHARED_QC = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "cikm-qc-sample" / "train.jsonl"
)

GOOD = [
    {
        "id": 1,
        "task": "QC",
        "language": "en",
        "origin_query": "frying pan",
        "category_path": "home,cookware,pans",
        "label": 1,
    },
    {
        "id": 2,
        "task": "QC",
        "language": "fr",
        "origin_query": "poêle",
        "category_path": "shoes,sandals",
        "label": 0,
    },
    {
        "id": "q-3",
        "task": "QI",
        "language": "de",
        "origin_query": "pfanne",
        "item_title": "Tefal Pan 28cm",
        "label": 1,
    },
]


def _jsonl(path: Path, recs: list) -> Path:
    path.write_text(
        "".join(
            (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in recs
        ),
        encoding="utf-8",
    )
    return path


def test_load_maps_competition_fields_and_types(tmp_path):
    df = data.load(_jsonl(tmp_path / "a.jsonl", GOOD))
    assert list(df.columns) == list(COLUMNS)
    assert df["id"].tolist() == ["1", "2", "q-3"]
    assert df["query"].tolist() == ["frying pan", "poêle", "pfanne"]
    assert df["target"].tolist() == ["home,cookware,pans", "shoes,sandals", "Tefal Pan 28cm"]
    assert df["label"].dtype == np.int64 and df["label"].tolist() == [1, 0, 1]
    assert (df["strategy"] == "original").all() and df["score"].isna().all()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_round_trip(tmp_path, suffix):
    df = make_fixture("QC", n=60, seed=3)
    extra = df.iloc[:2].copy()
    extra["id"] = extra["id"] + ":translation:de"
    extra["source_id"], extra["strategy"], extra["translator"], extra["score"] = (
        df["id"].iloc[:2].values,
        "translation",
        "freedict",
        [0.5, np.nan],
    )
    extra["language"] = "de"
    df = pd.concat([df, extra], ignore_index=True)
    out = data.write(df, tmp_path / f"out{suffix}")
    back = data.load(out)
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True), check_like=False)


def test_jsonl_writes_competition_format_and_is_byte_identical(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", GOOD)
    out = data.write(data.load(src), tmp_path / "out.jsonl")
    assert out.read_bytes() == src.read_bytes()  # ints stay ints, QI uses item_title
    test_file = _jsonl(
        tmp_path / "test.jsonl", [{k: v for k, v in GOOD[0].items() if k != "label"}]
    )
    df = data.load(test_file)
    assert df["label"].tolist() == [-1]
    data.write(df, tmp_path / "test_out.jsonl")
    assert "label" not in json.loads((tmp_path / "test_out.jsonl").read_text())


BAD = [
    ("{not json", "malformed JSON"),
    (
        {"task": "QC", "language": "en", "origin_query": "x", "category_path": "a", "label": 1},
        "missing field 'id'",
    ),
    (
        {
            "id": 9,
            "task": "QX",
            "language": "en",
            "origin_query": "x",
            "category_path": "a",
            "label": 1,
        },
        "unknown task 'QX'",
    ),
    (
        {
            "id": 9,
            "task": "QC",
            "language": "en",
            "origin_query": "x",
            "category_path": "a",
            "label": 2,
        },
        "label 2 is not 0 or 1",
    ),
    (
        {
            "id": 9,
            "task": "QC",
            "language": "en",
            "origin_query": "  ",
            "category_path": "a",
            "label": 1,
        },
        "empty query",
    ),
    (
        {
            "id": 9,
            "task": "QC",
            "language": "en",
            "origin_query": "x",
            "item_title": "a",
            "label": 1,
        },
        "'category_path'",
    ),
    (
        {"id": 9, "task": "QC", "origin_query": "x", "category_path": "a", "label": 1},
        "missing field 'language'",
    ),
    (
        {
            "id": 1,
            "task": "QC",
            "language": "en",
            "origin_query": "y",
            "category_path": "a",
            "label": 1,
        },
        "duplicate id '1' (first at",
    ),
]


@pytest.mark.parametrize("bad,reason", BAD)
def test_each_bad_row_raises_with_file_line_and_reason(tmp_path, bad, reason):
    path = _jsonl(tmp_path / "bad.jsonl", [GOOD[0], GOOD[1], bad])
    with pytest.raises(data.RelevanceDataError) as e:
        data.load(path)
    assert f"{path}:3: " in str(e.value) and reason in str(e.value)
    assert "fix:" in str(e.value)


def test_report_mode_returns_good_rows_and_every_rejected_line(tmp_path):
    recs = [GOOD[0], *[b for b, _ in BAD], GOOD[1]]
    path = _jsonl(tmp_path / "mixed.jsonl", recs)
    rows, rejected = data.load(path, errors="report")
    assert rows["id"].tolist() == ["1", "2"]
    assert rejected["line"].tolist() == list(range(2, 2 + len(BAD)))
    for (_, reason), got in zip(BAD, rejected["reason"], strict=True):
        assert reason in got
    assert rejected["raw"].iloc[0] == "{not json"
    assert len(rows) + len(rejected) == len(recs)  # nothing silently dropped


def test_duplicate_ids_across_files(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", GOOD[:1])
    b = _jsonl(tmp_path / "b.jsonl", GOOD[:1])
    with pytest.raises(
        data.RelevanceDataError, match=r"b.jsonl:1: duplicate id '1' \(first at .*a.jsonl:1\)"
    ):
        data.load([a, b])


def test_task_argument_fills_missing_task_and_selects(tmp_path):
    no_task = [{k: v for k, v in GOOD[0].items() if k != "task"}]
    df = data.load(_jsonl(tmp_path / "qc.jsonl", no_task), task="QC")
    assert df["task"].tolist() == ["QC"]
    with pytest.raises(data.RelevanceDataError, match="missing field 'task'"):
        data.load(tmp_path / "qc.jsonl")
    mixed = data.load(_jsonl(tmp_path / "m.jsonl", GOOD), task="QI")
    assert mixed["id"].tolist() == ["q-3"] and mixed.attrs["other_task_rows"] == 2


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(
        "id,task,language,origin_query,category_path,label\n1,QC,en,pan,a,1\n2,QC,en,pot,b,yes\n",
        encoding="utf-8",
    )
    with pytest.raises(data.RelevanceDataError, match=r"a.csv:3: label 'yes' is not 0 or 1"):
        data.load(path)


def test_parquet_needs_pyarrow_or_works(tmp_path):
    df = make_fixture("QI", n=20, seed=1)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pyarrow"):
            data.write(df, tmp_path / "x.parquet")
        (tmp_path / "y.parquet").write_bytes(b"PAR1")
        with pytest.raises(ImportError, match="pip install pyarrow"):
            data.load(tmp_path / "y.parquet")
    else:
        pd.testing.assert_frame_equal(data.load(data.write(df, tmp_path / "x.parquet")), df)


def test_write_refuses_to_overwrite_an_input(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", GOOD)
    before = src.read_bytes()
    df = data.load(src)
    with pytest.raises(data.RelevanceDataError, match="refusing to overwrite"):
        data.write(df.iloc[:1], src)
    assert src.read_bytes() == before
    data.write(df.iloc[:1], src, overwrite=True)
    assert len(data.load(src)) == 1
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_write_refuses_any_existing_file_without_overwrite(tmp_path):
    target = tmp_path / "report.jsonl"
    target.write_text("someone's notes\n")
    df = make_fixture("QC", n=5, seed=0)
    with pytest.raises(data.RelevanceDataError, match="it exists"):
        data.write(df, target)
    assert target.read_text() == "someone's notes\n"
    data.write(df, target, overwrite=True)
    assert len(data.load(target)) == 5


def test_write_validates_the_table(tmp_path):
    df = make_fixture("QC", n=10, seed=0)
    df.loc[3, "label"] = 5
    with pytest.raises(data.RelevanceDataError, match="labels must be"):
        data.write(df, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_summary_counts():
    df = make_fixture("QC", n=200, seed=2)
    s = data.summary(df)
    en = s[(s.task == "QC") & (s.language == "en")].iloc[0]
    sub = df[df.language == "en"]
    assert en["rows"] == len(sub) and en["positives"] == (sub.label == 1).sum()
    total = s[s.language == "all"].iloc[0]
    assert total["rows"] == 200 and total["positive_share"] == pytest.approx(df.label.mean())


@pytest.mark.parametrize("task", ["QC", "QI"])
def test_fixture_properties(task):
    df = make_fixture(task, n=500, seed=7)
    data.validate(df)
    assert df.attrs["generated"] and df["id"].str.startswith(f"gen-{task.lower()}-").all()
    assert set(df["language"]) == set(LANGUAGES)
    assert 0.58 < df["label"].mean() < 0.72
    assert not df.duplicated(["language", "query", "target"]).any()
    pd.testing.assert_frame_equal(df, make_fixture(task, n=500, seed=7))
    assert not df.equals(make_fixture(task, n=500, seed=8))
    if task == "QC":
        # the signal: a positive's target is the family of the product noun in the query
        paths = {v[0] for v in FAMILIES.values()}
        assert set(df["target"]) <= paths
        top = {v[0]: v[0].split(",")[0] for v in FAMILIES.values()}
        neg = df[df.label == 0]
        fam_of = {}
        for cat, _, nouns in FAMILIES.values():
            for n in nouns:
                fam_of.setdefault(n, cat)
        related = 0
        for q, t in zip(neg["query"], neg["target"], strict=True):
            cat = next(
                c
                for n, c in sorted(fam_of.items(), key=lambda x: -len(x[0]))
                if q.startswith(n) or n in q
            )
            assert t != cat  # a negative is never the query's own category
            related += top[t] == top[cat]
        assert 0.3 < related / len(neg) < 0.7  # about half are related-but-wrong


@pytest.mark.skipif(not SHARED_QC.exists(), reason=f"shared QC sample not found at {SHARED_QC}")
def test_reads_shared_qc_sample():
    df = data.load(SHARED_QC)
    assert len(df) == 21311 and set(df["task"]) == {"QC"}
    assert set(df["language"]) == {"en", "fr", "es", "ko", "pt", "ja", "de", "it", "pl", "ar"}
    s = data.summary(df).set_index("language")
    assert s.loc["all", "positive_share"] == pytest.approx(0.684, abs=0.002)
    assert s.loc["en", "rows"] == 2287


def test_fixture_label_noise_flips_the_listed_rows():
    clean = make_fixture("QI", n=300, seed=2)
    noisy = make_fixture("QI", n=300, seed=2, label_noise=0.1)
    changed = clean["id"][clean["label"] != noisy["label"]].tolist()
    assert changed == noisy.attrs["flipped_ids"] and 10 < len(changed) < 50
    assert clean.attrs["flipped_ids"] == []
    with pytest.raises(ValueError, match="label_noise"):
        make_fixture("QC", n=10, label_noise=0.5)
