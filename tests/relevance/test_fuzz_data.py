"""Bounded fuzzing of ``relevance.load``: damage lines of valid JSON-lines and CSV files.

Each case writes a small valid file with :func:`noiseforge.relevance.data.write`, damages
one to three of its data lines (byte flips, truncation, inserted quotes, newlines, CRs, byte
order marks, invalid UTF-8, huge numbers, deep nesting, hostile field values), and checks:

* ``errors="report"`` never raises;
* every rejected row names the file, a line inside the file and a reason with its fix;
* every undamaged line still loads, exactly (JSON lines: always; CSV: always when the
  damage leaves quotes and line ends alone, and otherwise it is either loaded intact or
  visibly kept in a rejected record or a neighbouring quoted cell: never lost or altered);
* nothing is dropped silently: rows + rejected == records (JSON lines, local CSV damage);
* ``errors="raise"`` returns the same rows when nothing was rejected, and otherwise raises
  :class:`~noiseforge.relevance.data.RelevanceDataError` (nothing else) naming the first
  rejected ``file:line``.

Budgets come from :func:`tests.fuzzing.fuzz_settings` (fixed seed; NOISEFORGE_FUZZ_SCALE
for longer runs).
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from noiseforge.relevance import data
from tests.support.fuzzing import fuzz_settings

BOM = b"\xef\xbb\xbf"

GOOD = pd.DataFrame(
    {
        "id": ["good-row-0001", "1000002", "good-row-0003", "good-row-0004", "gööd-row-0005"],
        "task": ["QC", "QC", "QI", "QC", "QI"],
        "language": ["en", "fr", "de", "ja", "ar"],
        "query": ["frying pan", "poêle, 28 cm", 'say "hi" pfanne', "フライパン", "مقلاة 🍳"],
        "target": ["home,cookware,pans", "shoes,sandals", "Tefal Pan 28cm", "a,b", "x"],
        "label": [1, 0, -1, 1, 0],
        "source_id": ["", "", "", "good-row-0001", ""],
        "strategy": ["original", "original", "original", "translation", "original"],
        "translator": ["", "", "", "freedict", ""],
        "score": [np.nan, np.nan, np.nan, 0.5, np.nan],
    }
)

SNIPPETS = [
    b'"',
    b'""',
    b"\n",
    b"\r",
    b"\r\n",
    BOM,
    b"\xff",
    b"\xc3",  # a truncated UTF-8 sequence
    b"\xed\xa0\x80",  # an encoded surrogate (invalid UTF-8)
    b",",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\\",
    b"\\ud800",
    b"\x00",
    b":",
    b" ",
    b"9" * 5000,
    b"1e400",
    b"-1e400",
    b"NaN",
    b"true",
    b"[" * 50_000,
    b"x" * 140_000,
]

#: raw JSON texts for a field's value
JSON_VALUES = [
    b"9" * 4301,
    b"-" + b"9" * 6000,
    b"1e400",
    b"-Infinity",
    b"NaN",
    b"true",
    b"false",
    b"null",
    b"1.5",
    b"2",
    b"-1",
    b'{"x": 1}',
    b"[1]",
    b"[" * 100_000 + b"]" * 100_000,
    b'"\\ud800"',
    b'"\\udc00x"',
    b'"' + b"x" * 200_000 + b'"',
    b'""',
    b'"  "',
    b'"nan"',
    b'"QX"',
    b'"good-row-0001"',
]
JSON_FIELDS = ["id", "task", "language", "origin_query", "category_path", "item_title", "label"]

#: raw CSV cells
CSV_CELLS = [
    b"x" * 140_000,
    b'"' + b"y" * 140_000 + b'"',
    b'"unclosed',
    b'"a"b',
    b'"two\nlines"',
    b"9" * 5000,
    b"1e400",
    b"nan",
    b"NaN",
    b"inf",
    b"",
    b" ",
    b"2",
    b"true",
    b"QX",
    b"\xff\xfe",
    b"a\rb",
    b"good-row-0001",
]


def _mutation():
    pos = st.integers(0, 10**6)
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 255)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("insert"), pos, st.sampled_from(SNIPPETS)),
        st.tuples(st.just("value"), st.integers(0, 20), st.integers(0, 10**3)),
        st.tuples(st.just("duplicate")),
    )


def _apply(line: bytes, m: tuple, fmt: str) -> bytes:
    kind = m[0]
    if kind == "flip":
        if not line:
            return bytes([m[2]])
        i = m[1] % len(line)
        return line[:i] + bytes([m[2]]) + line[i + 1 :]
    if kind == "truncate":
        return line[: m[1] % (len(line) + 1)]
    if kind == "insert":
        i = m[1] % (len(line) + 1)
        return line[:i] + m[2] + line[i:]
    if kind == "duplicate":
        return line  # the same line again: its id is a duplicate
    # "value": replace one field's value with a hostile one
    if fmt == ".jsonl":
        field = JSON_FIELDS[m[1] % len(JSON_FIELDS)]
        value = JSON_VALUES[m[2] % len(JSON_VALUES)]
        key = f'"{field}": '.encode()
        if key in line:  # replace the value up to the next ", " (good lines are flat)
            start = line.index(key) + len(key)
            end = line.find(b', "', start)
            end = len(line) - 1 if end < 0 else end
            return line[:start] + value + line[end:]
        return line[:-1] + b", " + key + value + b"}"
    cells = line.split(b",")  # good CSV cells with commas are quoted: a crude split is fine
    i = m[1] % len(cells)
    cells[i] = CSV_CELLS[m[2] % len(CSV_CELLS)]
    return b",".join(cells)


def _case():
    return st.fixed_dictionaries(
        {
            "damaged": st.dictionaries(
                st.integers(0, len(GOOD) - 1),
                st.lists(_mutation(), min_size=1, max_size=2),
                min_size=1,
                max_size=3,
            ),
            "crlf": st.booleans(),
            "bom": st.booleans(),
            "trailing_eol": st.booleans(),
        }
    )


def _build(folder: Path, fmt: str, case: dict) -> tuple[Path, bytes, dict, dict]:
    """The damaged file; returns (path, bytes, good {index: its line},
    damaged {index: (first line, last line, damaged bytes)})."""
    clean = data.write(GOOD, folder / f"clean{fmt}").read_bytes()
    lines = clean.split(b"\n")[:-1]
    header, body = (lines[:1], lines[1:]) if fmt == ".csv" else ([], lines)
    assert len(body) == len(GOOD)
    eol = b"\r\n" if case["crlf"] else b"\n"
    segments = list(header)
    kinds: list[int | None] = [None] * len(header)
    for i, line in enumerate(body):
        if i in case["damaged"]:
            seg = line
            for m in case["damaged"][i]:
                seg = _apply(seg, m, fmt)
            if any(m[0] == "duplicate" for m in case["damaged"][i]):
                segments.append(line)  # the original stays, followed by its copy
                kinds.append(i)
                kinds.append(-1 - i)
                segments.append(seg)
                continue
            segments.append(seg)
            kinds.append(-1 - i)  # damaged
        else:
            segments.append(line)
            kinds.append(i)
    out = BOM if case["bom"] else b""
    good: dict[int, int] = {}
    damaged: dict[int, tuple[int, int]] = {}
    for n, (seg, k) in enumerate(zip(segments, kinds, strict=True)):
        first = out.count(b"\n") + 1
        out += seg + (eol if n < len(segments) - 1 or case["trailing_eol"] else b"")
        if k is None:
            continue
        if k >= 0:
            good[k] = first
        else:
            damaged[-1 - k] = (first, first + seg.count(b"\n"), seg)
    path = folder / f"damaged{fmt}"
    path.write_bytes(out)
    return path, out, good, damaged


def _expected(i: int) -> dict:
    return GOOD.iloc[i].to_dict()


def _same(row: dict, want: dict) -> bool:
    for c, v in want.items():
        got = row[c]
        if isinstance(v, float) and np.isnan(v):
            if not (isinstance(got, float) and np.isnan(got)):
                return False
        elif got != v:
            return False
    return True


def _check_common(path: Path, content: bytes, rows: pd.DataFrame, rejected: pd.DataFrame):
    n_lines = content.count(b"\n") + 1
    assert list(rejected.columns) == ["file", "line", "reason", "raw"]
    for r in rejected.itertuples():
        assert r.file == str(path)
        assert isinstance(r.line, (int, np.integer)) and 1 <= r.line <= n_lines, r
        head, sep, fix = r.reason.partition("; fix: ")
        assert head.strip() and sep and fix.strip(), r.reason
        assert isinstance(r.raw, str)
    assert rows["id"].is_unique
    data.validate(rows)  # whatever loads follows the schema
    # raise mode: the same rows, or the package's error naming the first rejected line
    try:
        again = data.load(path)
    except data.RelevanceDataError as e:
        assert len(rejected), "raise mode failed although report mode rejected nothing"
        first = rejected.iloc[0]
        assert f"{first['file']}:{first['line']}: " in str(e)
    else:
        assert rejected.empty
        pd.testing.assert_frame_equal(again, rows)


def _dup_of_damaged(reason: str, damaged: dict) -> bool:
    m = re.search(r"duplicate id .* \(first at .*:(\d+)\)", reason)
    return bool(m) and any(a <= int(m.group(1)) <= b for a, b, _ in damaged.values())


def _good_lines_load(rows, rejected, good, damaged, *, allow_absorbed: bool, first_damage: int):
    by_id = {r["id"]: r for r in rows.to_dict("records")}
    rejected_at = dict(zip(rejected["line"], rejected["reason"], strict=True))
    texts = None
    for i, line in good.items():
        want = _expected(i)
        if want["id"] in by_id and _same(by_id[want["id"]], want):
            continue
        reason = rejected_at.get(line, "")
        if _dup_of_damaged(reason, damaged):
            continue  # a damaged line took this id first: said so, with its place
        if allow_absorbed and line > first_damage:
            # a quote opened by the damage may swallow later lines into one record
            if want["id"] in by_id:  # only a damaged copy of the line may carry its id
                assert any(want["id"].encode() in seg for *_, seg in damaged.values()), (
                    f"good row {want['id']} loaded altered"
                )
            if texts is None:
                texts = "\n".join([*rejected["raw"], *rows["query"], *rows["target"], *rows["id"]])
            assert want["id"] in texts, f"good line {line} ({want['id']}) vanished"
            continue
        raise AssertionError(f"good line {line} ({want['id']}) did not load: {reason!r}")


def _record_count(content: bytes, fmt: str) -> int:
    """Records of the file: non-blank lines (after the header for CSV)."""
    lines = content.split(b"\n")
    if lines and lines[0].startswith(BOM):
        lines[0] = lines[0][len(BOM) :]
    if fmt == ".csv":
        lines = lines[1:]
    n = 0
    for raw in lines:
        body = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            n += 1
            continue
        if fmt == ".jsonl":
            n += text.strip(" \t\r") != ""
        else:
            n += text.strip() != ""  # a whitespace-only line is blank; "" or , is a record
    return n


def _csv_local(seg: bytes) -> bool:
    """Whether a damaged CSV line cannot reach into the next lines: it has no line break of
    its own and Python's csv module (the oracle here) does not end it inside a quoted cell."""
    if b"\n" in seg or b"\r" in seg:
        return False
    if b'"' not in seg:
        return True
    old = csv.field_size_limit(sys.maxsize)  # the oracle must see past the size limit
    try:
        list(csv.reader([seg.decode("utf-8", "surrogateescape") + "\n"], strict=True))
    except csv.Error as e:
        return "unexpected end of data" not in str(e)
    finally:
        csv.field_size_limit(old)
    return True


def _run(fmt: str, case: dict):
    folder = Path(tempfile.mkdtemp(prefix="fuzz-loader-"))
    try:
        path, content, good, damaged = _build(folder, fmt, case)
        rows, rejected = data.load(path, errors="report")  # must not raise
        _check_common(path, content, rows, rejected)
        damaged_lines = {n for a, b, _ in damaged.values() for n in range(a, b + 1)}
        if fmt == ".jsonl":
            reaching = []  # a JSON line never reaches into the next one
        else:
            reaching = [a for a, _, seg in damaged.values() if not _csv_local(seg)]
        first_reach = min(reaching, default=len(content) + 2)
        _good_lines_load(
            rows, rejected, good, damaged, allow_absorbed=bool(reaching), first_damage=first_reach
        )
        for line, reason in zip(rejected["line"], rejected["reason"], strict=True):
            assert (
                line in damaged_lines or _dup_of_damaged(reason, damaged) or line > first_reach
            ), f"line {line} rejected but only lines {sorted(damaged_lines)} were damaged: {reason}"
        if not reaching:
            assert len(rows) + len(rejected) == _record_count(content, fmt)
        return rows, rejected
    finally:
        shutil.rmtree(folder, ignore_errors=True)


STATS: dict[str, int] = {}


def _count(fmt: str, rows, rejected):
    STATS[f"{fmt} cases"] = STATS.get(f"{fmt} cases", 0) + 1
    STATS[f"{fmt} rejected rows"] = STATS.get(f"{fmt} rejected rows", 0) + len(rejected)


@fuzz_settings(400)
@given(case=_case())
def test_fuzz_damaged_jsonl(case):
    _count(".jsonl", *_run(".jsonl", case))


@fuzz_settings(400)
@given(case=_case())
def test_fuzz_damaged_csv(case):
    _count(".csv", *_run(".csv", case))


@fuzz_settings(120)
@given(mutations=st.lists(_mutation(), min_size=1, max_size=3), bom=st.booleans())
def test_fuzz_damaged_csv_header(mutations, bom):
    """A damaged header may refuse the whole file or cost columns, but never crashes."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-loader-"))
    try:
        clean = data.write(GOOD, folder / "clean.csv").read_bytes()
        header, rest = clean.split(b"\n", 1)
        for m in mutations:
            header = _apply(header, m, ".csv")
        path = folder / "h.csv"
        content = (BOM if bom else b"") + header + b"\n" + rest
        path.write_bytes(content)
        rows, rejected = data.load(path, errors="report")
        _check_common(path, content, rows, rejected)
        whole = rejected["reason"].str.match(r"duplicate column|the header cannot|the file ")
        if whole.any():  # the file was refused whole: one entry, no rows
            assert rows.empty and len(rejected) == 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@fuzz_settings(120)
@given(
    chunks=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(SNIPPETS[:18])), max_size=12),
    fmt=st.sampled_from([".jsonl", ".csv"]),
)
def test_fuzz_arbitrary_bytes(chunks, fmt):
    """Any bytes at all: report mode never raises, raise mode raises only the package's error."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-loader-"))
    try:
        path = folder / f"x{fmt}"
        content = b"".join(chunks)
        path.write_bytes(content)
        rows, rejected = data.load(path, errors="report")
        _check_common(path, content, rows, rejected)
        assert len(rows) + len(rejected) >= 1  # an empty file is reported, not silent
    finally:
        shutil.rmtree(folder, ignore_errors=True)
