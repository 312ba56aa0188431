"""Load, validate and write relevance tables (competition JSON lines, CSV, Parquet).

Every input row either becomes a typed row of the table in
:mod:`noiseforge.relevance.schema` or a *rejected* row with its file, line and
reason: nothing is dropped silently. ``errors="raise"`` (default) stops with a
:class:`RelevanceDataError` listing the bad lines; ``errors="report"`` returns
the good rows and a ``rejected`` table instead.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from noiseforge._common.files import atomic_write

from .schema import COLUMNS, TASKS

#: the competition's target field per task
TARGET_FIELD = {"QC": "category_path", "QI": "item_title"}
_PROVENANCE = ("source_id", "strategy", "translator", "score")
_REJECTED_COLUMNS = ["file", "line", "reason", "raw"]
#: files read by :func:`load` in this process; :func:`write` never replaces them silently
_INPUT_FILES: set[Path] = set()


class RelevanceDataError(ValueError):
    """An input file (or a table) does not follow the relevance format."""


class Loaded(NamedTuple):
    """What ``load(..., errors="report")`` returns."""

    rows: pd.DataFrame
    #: columns file, line (first line of the record; Parquet: row number; 1 for a file
    #: refused whole), reason (ends with "; fix: ..."), raw (the record's text)
    rejected: pd.DataFrame


class _Reject(Exception):
    """One record is bad: it becomes a rejected row."""

    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason, self.fix = reason, fix


class _FileProblem(Exception):
    """A whole file is refused (empty, undecodable, a duplicate CSV column...)."""

    def __init__(self, line: int, reason: str, fix: str, raw: str = ""):
        super().__init__(reason)
        self.line, self.reason, self.fix, self.raw = line, reason, fix, raw


class _IntLiteral:
    """A JSON integer kept as its text: an id like 123 stays "123" whatever its size
    (no float rounding, no int-to-str digit limit)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def empty_table() -> pd.DataFrame:
    """A table with the schema's columns and dtypes and no rows."""
    return _typed(pd.DataFrame({c: [] for c in COLUMNS}))


#: longest JSON integer taken as text (Python's int/str conversion limit)
_MAX_INT_DIGITS = 4300
_TEXT_COLUMNS = ("id", "task", "language", "query", "target", "source_id", "strategy", "translator")


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    out = df[list(COLUMNS)].copy()
    for c in _TEXT_COLUMNS:
        out[c] = out[c].astype(str)
    out["label"] = out["label"].astype(np.int64)
    out["score"] = out["score"].astype(np.float64)
    return out.reset_index(drop=True)


def _show(v: Any, limit: int = 60) -> str:
    """``v`` for a message: its repr (a JSON integer as its digits), cut to ``limit``
    characters with the full length said (the whole value stays in ``raw``)."""
    if isinstance(v, _IntLiteral):
        s, unit = v.text, "digits"
    elif isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 4 * limit:
        return f"an integer of {v.bit_length()} bits"
    else:
        s, unit = repr(v), "characters"
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s)} {unit})"


def _kind(v: Any) -> str:
    """What a value is, in JSON's words."""
    if v is None:
        return "null"
    if isinstance(v, _IntLiteral):
        return f"the number {_show(v)}"
    if isinstance(v, str):
        return f"the string {_show(v)}"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, float):
        return f"the number {_show(v)}"
    if isinstance(v, dict):
        return f"an object ({_show(v)})"
    if isinstance(v, (list, tuple)):
        return f"an array ({_show(v)})"
    return f"a {type(v).__name__} ({_show(v)})"


def _text(rec: dict, key: str) -> str | None:
    """The text of field ``key``: a string, or an integer as its decimal digits; None
    when absent (or null). Anything else (true, 1.5, an object, a list) is refused
    rather than turned into Python's str() of it."""
    v = rec.get(key)
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _Reject(
                f"field {key!r} holds an unpaired surrogate {v[e.start]!r} "
                f"(at character {e.start + 1}), which is not a character",
                f"fix the \\u escape in {key} (a surrogate pair needs both halves)",
            ) from None
        return v
    if isinstance(v, _IntLiteral):
        if len(v.text.lstrip("-")) > _MAX_INT_DIGITS:
            raise _Reject(
                f"field {key!r} is an integer of {len(v.text.lstrip('-'))} digits (more than "
                f"{_MAX_INT_DIGITS}): not an id or a text",
                f'if it really is the {key}, write it as a string in quotes, e.g. "{key}": "..."',
            )
        return v.text
    if isinstance(v, int) and not isinstance(v, bool):  # Parquet integer columns
        return str(v)
    raise _Reject(
        f"field {key!r} is {_kind(v)}, not text",
        f'give {key} as text (in JSON a string in quotes: "{key}": "...")',
    )


def _row(rec: Any, default_task: str | None) -> tuple:
    """One validated row as a tuple in schema order, or raise :class:`_Reject`."""
    if not isinstance(rec, dict):
        raise _Reject(f"expected a JSON object, got {_kind(rec)}", "one object per line")
    rid = _text(rec, "id")
    if rid is None:
        raise _Reject("missing field 'id'", "give every row a unique id")
    if rid.strip() == "":
        raise _Reject(f"empty id {rid!r}", "give every row a unique, non-blank id")
    task = _text(rec, "task") or default_task
    if task is None:
        raise _Reject("missing field 'task'", 'add "task": "QC" or "QI", or pass load(..., task=)')
    if task not in TASKS:
        raise _Reject(f"unknown task {_show(task)}", f"task must be one of {', '.join(TASKS)}")
    language = _text(rec, "language")
    if language is None or language.strip() == "":
        raise _Reject("missing field 'language'", 'add the query\'s language code, e.g. "en"')
    query = _text(rec, "origin_query")
    if query is None:
        query = _text(rec, "query")
    if query is None:
        raise _Reject("missing field 'origin_query'", "add the search query as origin_query")
    if query.strip() == "":
        raise _Reject("empty query", "remove the row or fill in origin_query")
    field = TARGET_FIELD[task]
    target = _text(rec, field)
    if target is None:
        target = _text(rec, "target")
    if target is None or target.strip() == "":
        raise _Reject(f"missing or empty field {field!r} for task {task}", f"add {field}")
    label = _label(rec.get("label"))
    score = _score(rec.get("score"))
    return (
        rid,
        task,
        language.strip(),
        query,
        target,
        label,
        _text(rec, "source_id") or "",
        _text(rec, "strategy") or "original",
        _text(rec, "translator") or "",
        score,
    )


_LABEL_TEXT = re.compile(r"[+-]?[01](\.0*)?")
_UNLABELLED = (
    "to mark a row unlabelled leave label out (JSON), write null or leave the cell empty "
    "(CSV), or write -1"
)


def _label(v: Any) -> int:
    if v is None or v == "":
        return -1  # unlabelled (test files)
    if isinstance(v, bool):
        raise _Reject(f"label {v!r} is a boolean", "write 0 or 1")
    if isinstance(v, _IntLiteral):
        if v.text in ("0", "1", "-1", "-0"):
            return int(v.text)
    elif isinstance(v, int):
        if v in (0, 1, -1):
            return v
    elif isinstance(v, float):
        if math.isnan(v):
            raise _Reject("label NaN is not a label", _UNLABELLED)
        if math.isinf(v):
            raise _Reject(
                f"label {v!r} (a number too large for a float) is not 0 or 1",
                "use 1 (relevant), 0 (not relevant) or omit it",
            )
        if v in (0.0, 1.0, -1.0):
            return int(v)
    elif isinstance(v, str):
        s = v.strip()
        if _LABEL_TEXT.fullmatch(s):
            return int(float(s))
        if s.lower() == "nan":
            raise _Reject(f"label {v!r} (NaN) is not a label", _UNLABELLED)
    else:
        raise _Reject(f"label is {_kind(v)}", "use 1 (relevant), 0 (not relevant) or omit it")
    raise _Reject(
        f"label {_show(v)} is not 0 or 1", "use 1 (relevant), 0 (not relevant) or omit it"
    )


def _score(v: Any) -> float:
    if v is None or v == "":
        return float("nan")
    fix = "write a finite number, or leave score empty"
    if isinstance(v, bool):
        raise _Reject(f"score {v!r} is a boolean, not a number", fix)
    try:
        if isinstance(v, _IntLiteral):
            f = float(v.text)  # a decimal string: no int digit limit, inf if too large
        elif isinstance(v, (int, float)):
            f = float(v)
        elif isinstance(v, str):
            f = float(v.strip())
        else:
            raise _Reject(f"score is {_kind(v)}, not a number", fix)
    except ValueError:
        raise _Reject(f"score {_show(v)} is not a number", fix) from None
    except OverflowError:
        f = math.inf
    if math.isinf(f):
        raise _Reject(f"score {_show(v)} is not a finite number (too large for a float)", fix)
    return f  # NaN means "no score", as in the schema


# --- readers ------------------------------------------------------------------------------
# A reader yields (first line, last line, raw text, record or _Reject) per record and raises
# _FileProblem for a file it refuses whole. Lines are counted at LF ("\n") line ends, as
# grep -n, sed, wc -l and vim count them; CRLF is one line end; a lone CR (the old Mac line
# end) is NOT a line end. A CSV record that spans lines (quoted line breaks) is reported at
# its first line.

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _body(data: bytes) -> bytes:
    """A line without its line end (LF or CRLF)."""
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    return data


def _check_start(first: bytes) -> bytes:
    """The first line without a UTF-8 byte order mark; refuse UTF-16 files."""
    if first.startswith(_UTF16_BOMS):
        raise _FileProblem(
            1,
            "the file is UTF-16 encoded (it starts with a UTF-16 byte order mark)",
            "save it as UTF-8",
        )
    return first[len(_BOM) :] if first.startswith(_BOM) else first


def _decode_problem(data: bytes, e: UnicodeDecodeError, line_no: int) -> _Reject:
    return _Reject(
        f"line {line_no} is not valid UTF-8 (byte 0x{data[e.start]:02x} at byte {e.start + 1} "
        "of the line)",
        "save the file as UTF-8, or repair the damaged bytes",
    )


def _mid_bom() -> _Reject:
    return _Reject(
        "the line starts with a byte order mark (U+FEFF), which belongs only at the start of "
        "a file",
        "remove it (files joined with cat keep each file's mark)",
    )


def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Reject(f"key {_show(k)} appears twice in one object", "keep only one of them")
        out[k] = v
    return out


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, parse_int=_IntLiteral, object_pairs_hook=_json_object)
    except json.JSONDecodeError as e:
        hint = ""
        if "\r" in text:
            hint = (
                "; the line holds a carriage return (CR): only LF ends a line, a lone CR does not"
            )
        return _Reject(
            f"malformed JSON ({e.msg.removesuffix(' at')} at column {e.colno}{hint})",
            "fix the line's JSON syntax",
        )
    except RecursionError:
        return _Reject("the JSON is nested too deeply to read", "one flat object per line")
    except _Reject as r:
        return r


def _records_jsonl(path: Path) -> Iterator[tuple[int, int, str, Any]]:
    records = blank = 0
    with open(path, "rb") as f:
        for line_no, data in enumerate(f, 1):
            body = _body(data)
            if line_no == 1:
                body = _check_start(body)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                records += 1
                yield (
                    line_no,
                    line_no,
                    body.decode("utf-8", "backslashreplace"),
                    _decode_problem(body, e, line_no),
                )
                continue
            if text.strip(" \t\r") == "":
                blank += 1
                continue
            records += 1
            if text.startswith("\ufeff"):
                yield line_no, line_no, text, _mid_bom()
                continue
            yield line_no, line_no, text, _parse_json(text)
    if records == 0:
        raise _FileProblem(
            1,
            f"the file has only blank lines ({blank})" if blank else "the file is empty",
            "give the file one JSON object per line, or leave it out of the inputs",
        )


_CSV_ERRORS = (
    (
        "field larger than field limit",
        "a cell is longer than {limit} characters, the most a CSV cell may hold (often a quote "
        "that is not closed where it should be)",
        "check the record's quotes; text that long belongs in a .jsonl file",
    ),
    (
        "expected after",
        'a quoted cell is followed by more characters before the next comma (like "ab"c)',
        'quote the whole cell and double each quote inside it ("a""b")',
    ),
    (
        "unexpected end of data",
        "a quoted cell is never closed: it runs to the end of the file",
        "close the quote (and double each quote inside a quoted cell)",
    ),
    (
        "new-line character seen in unquoted field",
        "a carriage return (CR) inside an unquoted cell (only LF or CRLF ends a line)",
        "remove the CR, or quote the cell",
    ),
)


def _csv_problem(e: csv.Error) -> _Reject:
    msg = str(e)
    for key, reason, fix in _CSV_ERRORS:
        if key in msg:
            return _Reject(reason.format(limit=csv.field_size_limit()), fix)
    return _Reject(f"malformed CSV ({msg})", "fix the record's quotes and commas")


_CSV_BREAK = re.compile(r"[,\r\n]")


def _csv_quotes(text: str, in_quotes: bool, field_start: bool) -> tuple[bool, bool]:
    """Scan ``text`` as the csv module's default dialect does and return the state after
    it: (inside a quoted cell, at the start of a cell). Only used to find where a record
    ends after the csv module gave up on it (a cell over its size limit)."""
    i, n = 0, len(text)
    while i < n:
        if in_quotes:
            j = text.find('"', i)
            if j < 0:
                return True, False
            if text.startswith('"', j + 1):  # "" inside quotes: an escaped quote
                i = j + 2
                continue
            in_quotes, field_start, i = False, False, j + 1
        elif field_start and text[i] == '"':
            in_quotes, i = True, i + 1
        else:
            m = _CSV_BREAK.search(text, i)
            if m is None:
                return False, False
            field_start, i = True, m.end()
    return in_quotes, field_start


def _records_csv(path: Path) -> Iterator[tuple[int, int, str, Any]]:
    lines: list[tuple[int, str, _Reject | None]] = []  # the current record's lines

    def feed(f) -> Iterator[str]:
        for line_no, data in enumerate(f, 1):
            if line_no == 1:
                data = _check_start(data)
            try:
                text, bad = data.decode("utf-8"), None
            except UnicodeDecodeError as e:
                # surrogateescape keeps the parse going; the record is rejected below
                text, bad = (
                    data.decode("utf-8", "surrogateescape"),
                    _decode_problem(data, e, line_no),
                )
            lines.append((line_no, text, bad))
            yield text

    def raw() -> str:
        text = "".join(t for _, t, _ in lines)
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text

    def spans() -> str:
        return f" (the record spans lines {lines[0][0]}-{lines[-1][0]})" if len(lines) > 1 else ""

    header: list[str] | None = None
    header_line = records = 0
    with open(path, "rb") as f:
        source = feed(f)
        reader = csv.reader(source, strict=True)
        while True:
            lines.clear()
            problem: _Reject | None = None
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                cells, problem = [], _csv_problem(e)
                if "field limit" in str(e):
                    # the reader dropped the record mid-cell: read on to the record's real
                    # end so that the rest of a long quoted cell is not taken for records
                    state = _csv_quotes("".join(t for _, t, _ in lines), False, True)
                    while state[0] and next(source, None) is not None:
                        state = _csv_quotes(lines[-1][1], *state)
            if not lines:  # nothing was read: the end of the file
                break
            start = lines[0][0]
            bad = next((b for _, _, b in lines if b is not None), None)
            problem = bad or problem
            if problem is None and start > 1 and lines[0][1].startswith("\ufeff"):
                problem = _mid_bom()
            if header is None:
                if problem is not None:
                    raise _FileProblem(
                        start,
                        f"the header cannot be read: {problem.reason}{spans()}",
                        problem.fix,
                        raw(),
                    )
                if not cells or (len(lines) == 1 and lines[0][1].strip() == ""):
                    continue  # blank lines before the header
                header, header_line = cells, start
                seen: dict[str, int] = {}
                for i, name in enumerate(header, 1):
                    if name in seen:
                        raise _FileProblem(
                            start,
                            f"duplicate column {_show(name)} in the header (columns {seen[name]} "
                            f"and {i}): one of the two would be lost",
                            "rename or remove one of the two columns",
                            raw(),
                        )
                    seen[name] = i
                continue
            if problem is None and len(lines) == 1 and lines[0][1].strip() == "":
                continue  # a blank (or whitespace-only) line; "" is a cell, not a blank
            records += 1
            if problem is None and len(cells) != len(header):
                many = len(cells) > len(header)
                problem = _Reject(
                    f"{len(cells)} cell(s) but the header has {len(header)} columns",
                    "quote cells that contain commas"
                    if many
                    else "give every row one cell per column (an empty cell is fine: a,,b)",
                )
            if problem is not None:
                yield start, lines[-1][0], raw(), problem
                continue
            yield (
                start,
                lines[-1][0],
                raw(),
                {k: (v if v != "" else None) for k, v in zip(header, cells, strict=True)},
            )
    if header is None:
        raise _FileProblem(
            1, "the file is empty", "give the file a header line and rows, or leave it out"
        )
    if records == 0:
        raise _FileProblem(
            header_line,
            f"the file has a header (line {header_line}) but no rows",
            "add rows, or leave the file out of the inputs",
        )


def _records_parquet(path: Path) -> Iterator[tuple[int, int, str, Any]]:
    """Parquet rows through pyarrow; ``line`` is the row number (1-based)."""
    if importlib.util.find_spec("pyarrow") is None:
        raise ImportError(f"reading {path} needs the 'pyarrow' package: pip install pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    damaged = "check how the file was written, or write it again (e.g. with write())"
    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _FileProblem(1, f"not a readable Parquet file ({e})", damaged) from None
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _FileProblem(
                1,
                f"duplicate column {_show(name)} (columns {names.index(name) + 1} and {i + 1}): "
                "one of the two would be lost",
                "rename or remove one of the two columns",
            )
    n = 0
    try:
        for batch in pf.iter_batches():
            for rec in batch.to_pylist():
                n += 1
                yield n, n, json.dumps(rec, default=str, ensure_ascii=False), rec
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _FileProblem(
            n + 1, f"the Parquet data cannot be read from row {n + 1} on ({e})", damaged
        ) from None
    if n == 0:
        raise _FileProblem(
            1, "the file has no rows", "add rows, or leave the file out of the inputs"
        )


_READERS = {
    ".jsonl": _records_jsonl,
    ".json": _records_jsonl,
    ".csv": _records_csv,
    ".parquet": _records_parquet,
}


def _reader(path: Path):
    try:
        return _READERS[path.suffix.lower()]
    except KeyError:
        raise RelevanceDataError(
            f"{path}: unknown file type {path.suffix!r}; expected one of {', '.join(_READERS)}"
        ) from None


def load(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    task: str | None = None,
    *,
    errors: Literal["raise", "report"] = "raise",
) -> pd.DataFrame | Loaded:
    """Read one or more relevance files into the schema's table.

    Parameters
    ----------
    paths : a path or a list of paths; ``.jsonl``/``.json`` (competition JSON lines),
        ``.csv`` (competition or schema column names) or ``.parquet`` (needs pyarrow).
    task : ``"QC"`` or ``"QI"``: the task of rows without a ``task`` field; rows of the
        other task are skipped and counted in ``rows.attrs["other_task_rows"]``.
    errors : ``"raise"`` raises :class:`RelevanceDataError` naming every bad ``file:line``
        with its fix; ``"report"`` returns :class:`Loaded` ``(rows, rejected)``.

    Every record becomes a row or a rejected row (``file``, ``line``, ``reason`` with its
    ``fix:``, ``raw`` text): invalid UTF-8, malformed JSON or CSV, over-long CSV cells,
    non-finite or huge numbers, too deep nesting, values of the wrong type (``true`` or an
    object where text belongs; integers are taken as their digits) and NaN labels. A file is
    refused whole (one rejected entry, or the error) when it is empty or has no rows, is
    UTF-16, or has a duplicate CSV/Parquet column. A leading UTF-8 byte order mark is skipped.

    Lines are counted at LF (``\\n``) line ends, as ``grep -n``, ``sed`` and vim count them;
    CRLF is one line end and a lone CR is not one. A CSV record with quoted line breaks is
    reported at the line it starts on. For Parquet, ``line`` is the row number (from 1).

    Returns
    -------
    DataFrame with :data:`~noiseforge.relevance.schema.COLUMNS` (label -1 where a file has
    no label), or :class:`Loaded` with ``errors="report"``. Ids must be unique over all files;
    a repeated id is rejected with the place of its first use.
    """
    if errors not in ("raise", "report"):
        raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}")
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows: list[tuple] = []
    rejected: list[tuple] = []
    first_seen: dict[str, str] = {}
    other_task = 0
    files = [Path(p) for p in paths]
    for path in files:
        if not path.exists():
            raise FileNotFoundError(f"relevance data file not found: {path}")
        if path.is_dir():
            raise RelevanceDataError(f"{path} is a folder, not a data file; name the file in it")
        read = _reader(path)
        try:
            for line_no, end, raw, rec in read(path):
                where = f"{path}:{line_no}"
                try:
                    if isinstance(rec, _Reject):
                        raise rec
                    row = _row(rec, task)
                    if task is not None and row[1] != task:
                        other_task += 1
                        continue
                    if row[0] in first_seen:
                        raise _Reject(
                            f"duplicate id {_show(row[0])} (first at {first_seen[row[0]]})",
                            "give every row a unique id",
                        )
                    first_seen[row[0]] = where
                    rows.append(row)
                except _Reject as r:
                    span = f" (the record spans lines {line_no}-{end})" if end > line_no else ""
                    rejected.append((str(path), line_no, f"{r.reason}{span}; fix: {r.fix}", raw))
        except _FileProblem as p:
            rejected.append((str(path), p.line, f"{p.reason}; fix: {p.fix}", p.raw))
        _INPUT_FILES.add(path.resolve())
    table = _typed(pd.DataFrame(rows, columns=list(COLUMNS))) if rows else empty_table()
    table.attrs["source_files"] = [str(p.resolve()) for p in files]
    table.attrs["other_task_rows"] = other_task
    rejected_df = pd.DataFrame(rejected, columns=_REJECTED_COLUMNS)
    if errors == "report":
        return Loaded(table, rejected_df)
    if rejected:
        shown = "\n".join(f"  {f}:{n}: {reason}" for f, n, reason, _ in rejected[:10])
        more = f"\n  ... and {len(rejected) - 10} more" if len(rejected) > 10 else ""
        raise RelevanceDataError(
            f"{len(rejected)} problem(s) in {', '.join(map(str, files))}:\n{shown}{more}\n"
            "Fix them, or load(..., errors='report') to keep the good rows and get the rejected ones."
        )
    return table


def validate(df: pd.DataFrame) -> None:
    """Raise :class:`RelevanceDataError` unless ``df`` follows the schema (columns, tasks, labels, ids)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RelevanceDataError(f"table lacks column(s) {missing}; expected {list(COLUMNS)}")
    bad_task = ~df["task"].isin(TASKS)
    if bad_task.any():
        raise RelevanceDataError(
            f"unknown task(s) {sorted(set(df.loc[bad_task, 'task']))}; expected {TASKS}"
        )
    bad_label = ~df["label"].isin([-1, 0, 1])
    if bad_label.any():
        raise RelevanceDataError(
            f"labels must be -1, 0 or 1; found {sorted(set(df.loc[bad_label, 'label']))}"
        )
    dup = df["id"].duplicated()
    if dup.any():
        raise RelevanceDataError(
            f"duplicate id(s) {list(df.loc[dup, 'id'][:5])}; ids must be unique"
        )
    for col, what in (
        ("id", "id"),
        ("query", "query"),
        ("target", "target"),
        ("language", "language"),
    ):
        blank = df[col].map(lambda v: str(v).strip() == "").astype(bool)
        if blank.any():
            raise RelevanceDataError(
                f"empty {what} in row(s) with id {list(df.loc[blank, 'id'][:5])}; "
                f"every row needs a non-blank {what}"
            )
    score = pd.to_numeric(df["score"], errors="coerce")
    bad_score = (score.isna() & df["score"].notna()) | np.isinf(score.fillna(0).astype(float))
    if bad_score.any():
        raise RelevanceDataError(
            f"score must be a finite number or NaN; row(s) with id {list(df.loc[bad_score, 'id'][:5])} "
            f"have {list(df.loc[bad_score, 'score'][:5])}"
        )


#: ids written as JSON integers (competition files have integer ids): plain ASCII digits
#: without a leading zero, short enough for int(); anything else is written as a string
_JSON_INT_ID = re.compile(r"0|[1-9][0-9]{0,3999}")
_OPTIONAL_TEXT = ("source_id", "strategy", "translator")


def _jsonl_record(row: dict) -> dict:
    rid = row["id"]
    rec: dict[str, Any] = {"id": int(rid) if _JSON_INT_ID.fullmatch(rid) else rid}
    rec["task"] = row["task"]
    rec["language"] = row["language"]
    rec["origin_query"] = row["query"]
    rec[TARGET_FIELD[row["task"]]] = row["target"]
    if row["label"] != -1:
        rec["label"] = int(row["label"])
    if (
        row["strategy"] != "original"
        or row["source_id"]
        or row["translator"]
        or not math.isnan(row["score"])
    ):
        for c in _PROVENANCE:
            v = row[c]
            rec[c] = None if isinstance(v, float) and math.isnan(v) else v
    return rec


def _text_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its text columns as str, or :class:`RelevanceDataError` naming a value that
    is not text: integers become their digits and a missing (None/NaN) ``source_id``,
    ``strategy`` or ``translator`` becomes '' (read back as the defaults ''/'original');
    booleans, floats, objects and missing required values are refused, never str()-ed."""
    out = df.copy()
    for c in _TEXT_COLUMNS:
        col = df[c]
        kind = pd.api.types.infer_dtype(col, skipna=False)
        if kind not in ("string", "empty"):
            values = []
            for i, v in zip(df.index, col.to_numpy(dtype=object), strict=True):
                if isinstance(v, str):
                    values.append(str(v))
                elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                    values.append(str(int(v)))
                elif c in _OPTIONAL_TEXT and (
                    v is None or (isinstance(v, float) and math.isnan(v))
                ):
                    values.append("")
                else:
                    raise RelevanceDataError(
                        f"column {c!r} of row {i} (id {_show(df.at[i, 'id'])}) is {_kind(v)}, "
                        f"not text; put a string there (ids and texts are written exactly as given)"
                    )
            out[c] = pd.Series(values, index=df.index, dtype=object)
        joined = "\n".join(out[c].tolist())
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            for i, v in zip(df.index, out[c], strict=True):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise RelevanceDataError(
                        f"column {c!r} of row {i} holds an unpaired surrogate {v[e.start]!r} (at "
                        f"character {e.start + 1}), which cannot be written as UTF-8; "
                        "fix or remove that character"
                    ) from None
    return out


def _csv_cell(v: str) -> str:
    if v and (any(ch in v for ch in ',"\r\n') or v[0] == "\ufeff" or v != v.strip()):
        return '"' + v.replace('"', '""') + '"'
    return v


def _write_table(table: pd.DataFrame, suffix: str, fh) -> None:
    """Write ``table`` (already typed and checked) to the binary file ``fh``."""
    if suffix in (".jsonl", ".json"):
        for row in table.to_dict("records"):
            fh.write((json.dumps(_jsonl_record(row), ensure_ascii=False) + "\n").encode("utf-8"))
    elif suffix == ".csv":
        # Cells with a comma, a quote, a CR or LF, surrounding spaces or a leading U+FEFF are
        # quoted, so every text reads back exactly (pandas' writer leaves a lone CR unquoted).
        fh.write((",".join(COLUMNS) + "\n").encode("utf-8"))
        for row in table.to_dict("records"):
            cells = []
            for c in COLUMNS:
                v = row[c]
                if c == "label":
                    cells.append(str(int(v)))
                elif c == "score":
                    cells.append("" if math.isnan(v) else repr(float(v)))
                else:
                    cells.append(_csv_cell(v))
            fh.write((",".join(cells) + "\n").encode("utf-8"))
    else:
        table.to_parquet(fh, index=False)


def write(df: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a table atomically; the format follows the suffix.

    ``.jsonl``/``.json``: the competition format (``origin_query``, ``category_path`` for QC,
    ``item_title`` for QI, ``label`` unless -1), with provenance keys on synthesized rows;
    an id of plain ASCII digits is written as a JSON integer, any other id as a string.
    ``.csv``/``.parquet``: the schema's columns. Ids and texts read back exactly as written.

    An existing file is never replaced unless ``overwrite=True``, not even one created by
    someone else while the table was being written: the file is made with an exclusive
    create (a hard link of the finished temporary file), so the other file wins and this
    call raises :class:`RelevanceDataError`. The message says so more firmly for a file
    that :func:`load` read in this process (or one listed in ``df.attrs["source_files"]``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise RelevanceDataError(
            f"{path}: unknown file type {suffix!r}; expected one of {', '.join(_READERS)}"
        )
    validate(df)
    checked = _text_columns(df)  # refuses non-text and unencodable values cleanly
    inputs = _INPUT_FILES | {Path(p) for p in df.attrs.get("source_files", [])}
    if path.is_dir():
        raise RelevanceDataError(f"cannot write to {path}: it is a folder; give a file name")
    if path.exists() and not overwrite:
        what = "it is an input file" if path.resolve() in inputs else "it exists"
        raise RelevanceDataError(
            f"refusing to overwrite {path}: {what}; write elsewhere or pass overwrite=True "
            "(--overwrite on the command line)"
        )
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ImportError(f"writing {path} needs the 'pyarrow' package: pip install pyarrow")
    table = _typed(checked)
    if suffix == ".csv":
        limit = csv.field_size_limit()
        for c in _TEXT_COLUMNS:
            long = table[c].str.len() > limit
            if long.any():
                i = long.to_numpy().argmax()
                raise RelevanceDataError(
                    f"cannot write {path}: column {c!r} of the row with id {_show(table['id'][i])} "
                    f"holds {len(table[c][i])} characters, more than a CSV reader accepts ({limit}); "
                    "write a .jsonl or .parquet file instead"
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda fh: _write_table(table, suffix, fh), overwrite=overwrite)
    except FileExistsError:
        raise RelevanceDataError(
            f"refusing to overwrite {path}: it was created by someone else while this table was "
            "being written (that file is kept as it is); write elsewhere or pass overwrite=True"
        ) from None
    return path


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Rows, labelled rows and the positive share per (task, language), plus an ``all`` row per task.

    Returns a DataFrame with columns task, language, rows, labelled, positives, positive_share
    (positives / labelled; NaN when nothing is labelled).
    """
    parts = []
    for task, g in df.groupby("task", sort=True):
        for lang, h in [*g.groupby("language", sort=True), ("all", g)]:
            labelled = int((h["label"] >= 0).sum())
            pos = int((h["label"] == 1).sum())
            parts.append(
                (task, lang, len(h), labelled, pos, pos / labelled if labelled else float("nan"))
            )
    return pd.DataFrame(
        parts, columns=["task", "language", "rows", "labelled", "positives", "positive_share"]
    )
