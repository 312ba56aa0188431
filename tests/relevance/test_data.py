"""Data layer: competition format round trips, validation errors with line numbers, fixture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from noiseforge.relevance import data
from noiseforge.relevance.fixture import FAMILIES, LANGUAGES, make_fixture
from noiseforge.relevance.schema import COLUMNS

SHARED_QC = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "cikm-qc-sample" / "train.jsonl"
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


# --- hardening (issue 14): hostile values, file-level problems, line numbers ----------------

LINE = (
    '{"id": ID, "task": "QC", "language": "en", "origin_query": QUERY, '
    '"category_path": "a,b", "label": LABEL}'
)


def _line(id_="9", query='"pan"', label="1", extra="") -> str:
    text = LINE.replace("ID", id_).replace("QUERY", query).replace("LABEL", label)
    return text[:-1] + extra + "}"


HOSTILE = [
    # (the bytes of line 2, a part of its reason)
    (_line(query='"p\xffn"').encode("latin-1"), "not valid UTF-8 (byte 0xff at byte"),
    (_line(label="1e400"), "label inf (a number too large for a float) is not 0 or 1"),
    (_line(label="1" * 5000), "label 11111"),
    (_line(extra=', "score": ' + "9" * 400), "(400 digits) is not a finite number"),
    (_line(extra=', "score": Infinity'), "score inf is not a finite number"),
    (_line(id_="7" * 4301), "field 'id' is an integer of 4301 digits"),
    (_line(extra=', "x": ' + "[" * 100_000 + "]" * 100_000), "nested too deeply"),
    (_line(id_="true"), "field 'id' is the boolean true, not text"),
    (_line(id_="1.5"), "field 'id' is the number 1.5, not text"),
    (_line(id_="1e3"), "field 'id' is the number 1000.0, not text"),
    (_line(id_='{"a": 1}'), "field 'id' is an object"),
    (_line(query='{"x": 1}'), "field 'origin_query' is an object ({'x': 1}), not text"),
    (_line(query='["pan"]'), "field 'origin_query' is an array"),
    (_line(query="NaN"), "field 'origin_query' is the number nan, not text"),
    (_line(label="NaN"), "label NaN is not a label"),
    (_line(label='"nan"'), "label 'nan' (NaN) is not a label"),
    (_line(label="true"), "label True is a boolean"),
    (_line(label="[1]"), "label is an array"),
    (_line(extra=', "score": true'), "score True is a boolean"),
    (_line(extra=', "score": {}'), "score is an object"),
    (_line(extra=', "label": 0'), "key 'label' appears twice"),
    (_line(query='"p\\ud800n"'), "unpaired surrogate '\\ud800' (at character 2)"),
    ("\ufeff" + _line(), "starts with a byte order mark (U+FEFF)"),
    (_line(query='"p\ran"'), "a lone CR does not"),
    ("[1, 2]", "expected a JSON object, got an array"),
]


@pytest.mark.parametrize("bad,reason", HOSTILE, ids=[r[:30] for _, r in HOSTILE])
def test_hostile_values_are_rejected_rows_not_crashes(tmp_path, bad, reason):
    path = tmp_path / "hostile.jsonl"
    good = [json.dumps(r, ensure_ascii=False).encode() for r in GOOD]
    bad = bad if isinstance(bad, bytes) else bad.encode("utf-8")
    path.write_bytes(b"\n".join([good[0], bad, good[1], good[2]]) + b"\n")
    rows, rejected = data.load(path, errors="report")
    assert rows["id"].tolist() == ["1", "2", "q-3"]  # the good rows around it still load
    assert rejected["file"].tolist() == [str(path)] and rejected["line"].tolist() == [2]
    got = rejected["reason"].iloc[0]
    assert reason in got and "; fix: " in got, got
    assert len(got) < 400  # a huge value is cut in the message (the whole line is in raw)
    assert rejected["raw"].iloc[0] == bad.decode("utf-8", "backslashreplace")
    with pytest.raises(data.RelevanceDataError) as e:
        data.load(path)
    assert f"{path}:2: " in str(e.value) and reason in str(e.value)


def test_json_integers_are_taken_as_their_exact_digits(tmp_path):
    recs = [_line(id_="12"), _line(id_="-0").replace("pan", "pot"), _line(id_="5" * 4300)]
    rows = data.load(_jsonl(tmp_path / "ints.jsonl", recs))
    assert rows["id"].tolist() == ["12", "-0", "5" * 4300]
    rows = data.load(_jsonl(tmp_path / "q.jsonl", [_line(query="42")]))
    assert rows["query"].tolist() == ["42"]  # an integer where text belongs: its digits


def test_each_text_field_refuses_non_text(tmp_path):
    fields = ["task", "language", "category_path", "source_id", "strategy", "translator"]
    recs = []
    for i, f in enumerate(fields):
        rec = dict(GOOD[0], id=f"r{i}")
        rec[f] = True
        recs.append(rec)
    rows, rejected = data.load(_jsonl(tmp_path / "t.jsonl", recs), errors="report")
    assert rows.empty and rejected["line"].tolist() == list(range(1, len(fields) + 1))
    for f, reason in zip(fields, rejected["reason"], strict=True):
        assert f"field {f!r} is the boolean true, not text" in reason


H = "id,task,language,origin_query,category_path,label\n"


def _csv(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


CSV_HOSTILE = [
    # (data lines after the header, line of the rejected record, a part of the reason)
    ("2,QC,en," + "x" * 140_000 + ",a,1\n", 3, "a cell is longer than 131072 characters"),
    ('2,QC,en,"' + "x\n" * 70_000 + '",a,1\n', 3, "(the record spans lines 3-70003)"),
    ("2,QC,en,pan,a,nan\n", 3, "label 'nan' (NaN) is not a label"),
    ("2,QC,en,pan,a\n", 3, "5 cell(s) but the header has 6 columns"),
    ("2,QC,en,pan,a,1,x\n", 3, "7 cell(s) but the header has 6 columns"),
    ("2,QC,en,p\ran,a,1\n", 3, "a carriage return (CR) inside an unquoted cell"),
    ('2,QC,en,"pan"x,a,1\n', 3, "a quoted cell is followed by more characters"),
    ("\ufeff2,QC,en,pan,a,1\n", 3, "starts with a byte order mark"),
    ("2,QC,en,pan,a,1e400\n", 3, "label '1e400' is not 0 or 1"),
    ("2,QC,en,pan,a,1,\n".replace(",1,\n", ",1\n").replace("pan", "p\udcffn"), 3, "UTF-8"),
]


@pytest.mark.parametrize("lines,line,reason", CSV_HOSTILE, ids=[r[:30] for *_, r in CSV_HOSTILE])
def test_csv_hostile_records_are_rejected_at_their_first_line(tmp_path, lines, line, reason):
    text = H + "1,QC,en,pan,a,1\n" + lines + "3,QC,en,pot,b,0\n"
    path = _csv(tmp_path / "h.csv", text.encode("utf-8", "surrogateescape"))
    rows, rejected = data.load(path, errors="report")
    assert rows["id"].tolist() == ["1", "3"]
    assert rejected["line"].tolist() == [line], rejected["reason"].tolist()
    assert reason in rejected["reason"].iloc[0] and "; fix: " in rejected["reason"].iloc[0]
    with pytest.raises(data.RelevanceDataError, match=rf"h.csv:{line}: "):
        data.load(path)


def test_csv_score_hostile(tmp_path):
    path = _csv(
        tmp_path / "s.csv",
        "id,task,language,query,target,label,score\n"
        "1,QC,en,pan,a,1,1e400\n2,QC,en,pan,a,1," + "9" * 5000 + "\n3,QC,en,pan,a,1,0.25\n",
    )
    rows, rejected = data.load(path, errors="report")
    assert rows["id"].tolist() == ["3"] and rows["score"].tolist() == [0.25]
    assert rejected["line"].tolist() == [2, 3]
    assert all("is not a finite number" in r for r in rejected["reason"])


def test_csv_duplicate_header_refuses_the_file(tmp_path):
    path = _csv(tmp_path / "d.csv", H.replace(",label", ",label,label") + "1,QC,en,pan,a,1,0\n")
    rows, rejected = data.load(path, errors="report")
    assert rows.empty and rejected["line"].tolist() == [1]
    assert "duplicate column 'label' in the header (columns 6 and 7)" in rejected["reason"][0]
    with pytest.raises(data.RelevanceDataError, match=r"d.csv:1: duplicate column 'label'"):
        data.load(path)


def test_csv_multiline_record_is_reported_where_it_starts(tmp_path):
    text = H + '1,QC,en,pan,a,1\n2,QC,en,"two\nline\nquery",b,yes\n3,QC,en,"ok\nquery",b,0\n4,x\n'
    rows, rejected = data.load(_csv(tmp_path / "m.csv", text), errors="report")
    assert rows["id"].tolist() == ["1", "3"] and rows["query"][1] == "ok\nquery"
    assert rejected["line"].tolist() == [3, 8]
    assert "label 'yes' is not 0 or 1 (the record spans lines 3-5)" in rejected["reason"][0]
    assert rejected["raw"][0] == '2,QC,en,"two\nline\nquery",b,yes'  # the record's own text


def _grep_n(data_bytes: bytes, needle: bytes) -> int:
    """The line number `grep -n` gives: lines end at LF."""
    return (
        data_bytes.split(b"\n").index(next(x for x in data_bytes.split(b"\n") if needle in x)) + 1
    )


def test_lone_cr_does_not_shift_line_numbers(tmp_path):
    # line 2: a CR as JSON whitespace (valid); line 3: CRLF; line 4 is bad
    raw = (
        json.dumps(GOOD[0]).encode()
        + b"\n"
        + json.dumps(GOOD[1]).replace(", ", ",\r ").encode()
        + b"\n"
        + json.dumps(GOOD[2]).encode()
        + b"\r\n"
        + b'{"bad": MARK\n'
    )
    path = tmp_path / "cr.jsonl"
    path.write_bytes(raw)
    rows, rejected = data.load(path, errors="report")
    assert rows["id"].tolist() == ["1", "2", "q-3"]
    assert rejected["line"].tolist() == [_grep_n(raw, b"MARK")] == [4]
    csv_raw = (H + '1,QC,en,"p\ran",a,1\r\n2,QC,en,pot,b,x\n').encode()
    rows, rejected = data.load(_csv(tmp_path / "cr.csv", csv_raw), errors="report")
    assert rows["query"].tolist() == ["p\ran"]  # a CR inside quotes is content
    assert rejected["line"].tolist() == [_grep_n(csv_raw, b"pot")] == [3]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_utf8_bom_is_skipped(tmp_path, suffix):
    df = make_fixture("QC", n=5, seed=0)
    plain = data.write(df, tmp_path / f"plain{suffix}")
    bom = tmp_path / f"bom{suffix}"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    pd.testing.assert_frame_equal(data.load(bom), df)


def test_utf16_file_is_refused_whole(tmp_path):
    path = tmp_path / "u16.csv"
    path.write_bytes((H + "1,QC,en,pan,a,1\n").encode("utf-16"))
    rows, rejected = data.load(path, errors="report")
    assert (
        rows.empty
        and "UTF-16" in rejected["reason"][0]
        and "save it as UTF-8" in rejected["reason"][0]
    )


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("e.jsonl", b"", "the file is empty"),
        ("b.jsonl", b"\n  \n\n", "the file has only blank lines (3)"),
        ("bom.jsonl", b"\xef\xbb\xbf", "the file has only blank lines (1)"),
        ("e.csv", b"", "the file is empty"),
        ("h.csv", H.encode(), "the file has a header (line 1) but no rows"),
        ("hb.csv", (H + "\n\n").encode(), "the file has a header (line 1) but no rows"),
    ],
)
def test_an_empty_file_is_an_error_or_a_rejected_entry(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(data.RelevanceDataError, match=re.escape(f"{name}:1: {reason}; fix: ")):
        data.load(path)
    good = _jsonl(tmp_path / "good.jsonl", GOOD)
    rows, rejected = data.load([good, path], errors="report")
    assert len(rows) == 3 and rejected["file"].tolist() == [str(path)]
    assert rejected["line"].tolist() == [1] and reason in rejected["reason"][0]


def test_unlabelled_rows_still_load_as_minus_one(tmp_path):
    rows = data.load(_csv(tmp_path / "u.csv", H + "1,QC,en,pan,a,\n2,QC,en,pan,a,-1\n"))
    assert rows["label"].tolist() == [-1, -1]
    no_label = [{k: v for k, v in GOOD[0].items() if k != "label"}, dict(GOOD[1], label=None)]
    assert data.load(_jsonl(tmp_path / "u.jsonl", no_label))["label"].tolist() == [-1, -1]


def test_load_refuses_a_folder(tmp_path):
    with pytest.raises(data.RelevanceDataError, match="is a folder"):
        data.load(tmp_path)


def test_parquet_rules(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    t = pa.table(
        {
            "id": [1, 2, 3, 4],
            "task": ["QC"] * 4,
            "language": ["en"] * 4,
            "origin_query": ["a", "b", None, "d"],
            "category_path": ["x"] * 4,
            "label": [1.0, float("nan"), 0.0, None],
        }
    )
    pq.write_table(t, tmp_path / "n.parquet")
    rows, rejected = data.load(tmp_path / "n.parquet", errors="report")
    assert rows["id"].tolist() == ["1", "4"] and rows["label"].tolist() == [1, -1]
    assert rejected["line"].tolist() == [2, 3]
    assert "label NaN is not a label" in rejected["reason"][0]
    dup = pa.Table.from_arrays([pa.array(["1"]), pa.array(["2"])], names=["id", "id"])
    pq.write_table(dup, tmp_path / "dup.parquet")
    with pytest.raises(data.RelevanceDataError, match=r"dup.parquet:1: duplicate column 'id'"):
        data.load(tmp_path / "dup.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(data.RelevanceDataError, match="not a readable Parquet file"):
        data.load(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"id": pa.array([], pa.string())}), tmp_path / "e.parquet")
    with pytest.raises(data.RelevanceDataError, match="the file has no rows"):
        data.load(tmp_path / "e.parquet")
    t = pa.table({"id": [True], "task": ["QC"], "language": ["en"], "origin_query": ["q"]})
    pq.write_table(t.append_column("category_path", pa.array(["x"])), tmp_path / "b.parquet")
    with pytest.raises(data.RelevanceDataError, match="field 'id' is the boolean true"):
        data.load(tmp_path / "b.parquet")


# --- write(): exclusive create, exact ids ------------------------------------------------------


def test_write_never_clobbers_a_file_created_during_the_write(tmp_path, monkeypatch):
    """Deterministic: someone creates the target after write()'s existence check."""
    target = tmp_path / "out.jsonl"
    original = data._write_table

    def racing(table, suffix, fh):
        target.write_text("theirs\n")  # appears between the check and the rename
        original(table, suffix, fh)

    monkeypatch.setattr(data, "_write_table", racing)
    with pytest.raises(data.RelevanceDataError, match="created by someone else while"):
        data.write(make_fixture("QC", n=5, seed=0), target)
    assert target.read_text() == "theirs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left
    target.unlink()
    monkeypatch.setattr(data, "_write_table", racing)
    data.write(make_fixture("QC", n=5, seed=0), target, overwrite=True)  # asked for: replaced
    assert len(data.load(target)) == 5


def test_write_is_exclusive_without_hard_links(tmp_path, monkeypatch):
    import errno
    import os

    def no_link(src, dst):
        raise OSError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(os, "link", no_link)
    df = make_fixture("QC", n=5, seed=0)
    out = data.write(df, tmp_path / "a.jsonl")
    pd.testing.assert_frame_equal(data.load(out), df)
    target = tmp_path / "b.jsonl"
    original = data._write_table

    def racing(table, suffix, fh):
        target.write_text("theirs\n")
        original(table, suffix, fh)

    monkeypatch.setattr(data, "_write_table", racing)
    with pytest.raises(data.RelevanceDataError, match="created by someone else"):
        data.write(df, target)
    assert target.read_text() == "theirs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"]


def test_write_against_a_real_competing_writer(tmp_path):
    """A thread creates the target (exclusively, as a careful writer does) as soon as write()
    has passed its existence check (its temporary file appears). Whoever comes second must
    fail; nobody's file is replaced. The old check-then-rename lost the other file each time."""
    import threading
    import time

    df = make_fixture("QC", n=3000, seed=0)
    ours = data.write(df, tmp_path / "ref.jsonl").read_bytes()
    theirs = b"theirs\n"
    raced = 0
    for i in range(5):
        target = tmp_path / f"out{i}.jsonl"
        result = {}

        def competitor(target=target, result=result):
            deadline = time.monotonic() + 10
            while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
                if time.monotonic() > deadline:
                    return
            try:
                with open(target, "xb") as f:
                    f.write(theirs)
                result["created"] = True
            except FileExistsError:
                result["created"] = False

        t = threading.Thread(target=competitor)
        t.start()
        try:
            data.write(df, target)
            wrote = True
        except data.RelevanceDataError as e:
            assert "created by someone else" in str(e)
            wrote = False
        t.join()
        assert result["created"] != wrote  # exactly one of the two made the file
        assert target.read_bytes() == (ours if wrote else theirs)
        raced += not wrote
    assert raced >= 1  # the competitor did get in between the check and the rename
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_keeps_its_api(tmp_path):
    from noiseforge._common.files import atomic_write, atomic_write_text

    p = atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(p, "two")  # the default still replaces
    assert p.read_text() == "two"
    with pytest.raises(FileExistsError):
        atomic_write(p, lambda fh: fh.write(b"three"), overwrite=False)
    assert p.read_text() == "two"
    atomic_write(tmp_path / "b.bin", lambda fh: fh.write(b"\x00"), overwrite=False)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00"
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "c.bin", lambda fh: 1 / 0, overwrite=False)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def _table_with_ids(ids: list[str], queries: list[str] | None = None) -> pd.DataFrame:
    df = make_fixture("QC", n=len(ids), seed=0) if ids else data.empty_table()
    df = df.iloc[: len(ids)].copy()
    df["id"] = ids
    if queries is not None:
        df["query"] = queries
    return df.reset_index(drop=True)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_write_keeps_non_ascii_digit_ids(tmp_path, suffix):
    ids = ["١٢", "12", "²", "012", "0", "-5", "1.0", "१२३", "12 "]
    out = data.write(_table_with_ids(ids), tmp_path / f"ids{suffix}")
    assert data.load(out)["id"].tolist() == ids
    if suffix == ".jsonl":
        written = [json.loads(x)["id"] for x in out.read_text(encoding="utf-8").splitlines()]
        assert written == ["١٢", 12, "²", "012", 0, "-5", "1.0", "१२३", "12 "]


def test_write_refuses_what_load_would_not_read_back(tmp_path):
    df = _table_with_ids(["a", "b"])
    for col, value, match in [
        ("id", " ", "empty id"),
        ("target", "", "empty target"),
        ("id", "x\ud800", "unpaired surrogate"),
        ("query", True, "is the boolean true, not text"),
        ("id", float("nan"), "is the number nan, not text"),
        ("score", float("inf"), "finite"),
    ]:
        bad = df.copy()
        bad[col] = bad[col].astype(object)
        bad.at[1, col] = value
        with pytest.raises(data.RelevanceDataError, match=match):
            data.write(bad, tmp_path / "x.jsonl")
        assert not (tmp_path / "x.jsonl").exists()
    long = _table_with_ids(["a", "b"], ["q", "x" * 140_000])
    with pytest.raises(data.RelevanceDataError, match="more than a CSV reader accepts"):
        data.write(long, tmp_path / "x.csv")
    assert data.load(data.write(long, tmp_path / "x.jsonl"))["query"][1] == "x" * 140_000
    missing = df.copy()
    missing["source_id"] = [None, float("nan")]  # missing provenance: written as ''
    assert data.load(data.write(missing, tmp_path / "m.csv"))["source_id"].tolist() == ["", ""]


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support.fuzzing import fuzz_settings  # noqa: E402

_FORMATS = [".jsonl", ".csv"]
try:
    import pyarrow  # noqa: F401

    _FORMATS.append(".parquet")
except ImportError:
    pass


@pytest.mark.parametrize("suffix", _FORMATS)
@fuzz_settings(60)
@given(
    ids=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True),
    queries=st.lists(st.text(min_size=1, max_size=12), min_size=6, max_size=6),
)
def test_ids_and_texts_round_trip_exactly(tmp_path_factory, suffix, ids, queries):
    df = _table_with_ids(ids, queries[: len(ids)])
    path = tmp_path_factory.mktemp("rt") / f"t{suffix}"
    blank = any(x.strip() == "" for x in ids + queries[: len(ids)])
    if blank:  # load would refuse these rows, so write refuses them first
        with pytest.raises(data.RelevanceDataError, match="empty"):
            data.write(df, path)
        return
    back = data.load(data.write(df, path))
    assert back["id"].tolist() == ids and back["query"].tolist() == queries[: len(ids)]
    assert back["id"].map(type).eq(str).all()
    pd.testing.assert_frame_equal(back, df)


def test_csv_blank_lines_are_skipped_but_an_empty_quoted_cell_is_a_record(tmp_path):
    text = "\n  \n" + H + '1,QC,en,pan,a,1\n\n   \n""\n,\n2,QC,en,pot,b,0\n'
    rows, rejected = data.load(_csv(tmp_path / "b.csv", text), errors="report")
    assert rows["id"].tolist() == ["1", "2"]
    assert rejected["line"].tolist() == [7, 8]  # '""' and ',' are records, not blank lines
    assert "1 cell(s) but the header has 6 columns" in rejected["reason"][0]


@pytest.mark.parametrize(
    "line,reason",
    [
        ("5", "got the number 5"),
        ("null", "got null"),
        ('"text"', "got the string 'text'"),
        ("[1, 2]", "got an array ([1, 2])"),
    ],
)
def test_a_line_that_is_not_an_object(tmp_path, line, reason):
    rows, rejected = data.load(_jsonl(tmp_path / "x.jsonl", [GOOD[0], line]), errors="report")
    assert len(rows) == 1 and rejected["line"].tolist() == [2]
    assert f"expected a JSON object, {reason}" in rejected["reason"][0]


def test_csv_bad_utf8_inside_a_multiline_record(tmp_path):
    raw = (H + '1,QC,en,pan,a,1\n2,QC,en,"two\nli\xffne",b,1\n3,QC,en,pot,b,0\n').encode(
        "utf-8", "surrogateescape"
    )
    raw = raw.replace("\xff".encode(), b"\xff")
    rows, rejected = data.load(_csv(tmp_path / "u.csv", raw), errors="report")
    assert rows["id"].tolist() == ["1", "3"] and rejected["line"].tolist() == [3]
    reason = rejected["reason"][0]
    assert "line 4 is not valid UTF-8 (byte 0xff at byte 3" in reason
    assert "(the record spans lines 3-4)" in reason
    assert rejected["raw"][0] == '2,QC,en,"two\nli\\xffne",b,1'


def test_write_names_missing_columns(tmp_path):
    with pytest.raises(data.RelevanceDataError, match=r"table lacks column\(s\) \['score'\]"):
        data.write(make_fixture("QC", n=3).drop(columns="score"), tmp_path / "x.jsonl")
