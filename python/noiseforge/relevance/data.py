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
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

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
    rejected: pd.DataFrame  # columns file, line, reason, raw


class _Reject(Exception):
    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def empty_table() -> pd.DataFrame:
    """A table with the schema's columns and dtypes and no rows."""
    return _typed(pd.DataFrame({c: [] for c in COLUMNS}))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    out = df[list(COLUMNS)].copy()
    for c in ("id", "task", "language", "query", "target", "source_id", "strategy", "translator"):
        out[c] = out[c].astype(str)
    out["label"] = out["label"].astype(np.int64)
    out["score"] = out["score"].astype(np.float64)
    return out.reset_index(drop=True)


def _text(rec: dict, key: str) -> str | None:
    v = rec.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def _row(rec: dict, default_task: str | None) -> tuple:
    """One validated row as a tuple in schema order, or raise :class:`_Reject`."""
    if not isinstance(rec, dict):
        raise _Reject(f"expected a JSON object, got {type(rec).__name__}", "one object per line")
    rid = _text(rec, "id")
    if rid is None or rid.strip() == "":
        raise _Reject("missing field 'id'", "give every row a unique id")
    task = _text(rec, "task") or default_task
    if task is None:
        raise _Reject("missing field 'task'", 'add "task": "QC" or "QI", or pass load(..., task=)')
    if task not in TASKS:
        raise _Reject(f"unknown task {task!r}", f"task must be one of {', '.join(TASKS)}")
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
    score = rec.get("score")
    try:
        score = float("nan") if score is None or score == "" else float(score)
    except (TypeError, ValueError):
        raise _Reject(
            f"score {score!r} is not a number", "write a number or leave it empty"
        ) from None
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


def _label(v: Any) -> int:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return -1  # unlabelled (test files)
    if isinstance(v, bool):
        raise _Reject(f"label {v!r} is a boolean", "write 0 or 1")
    try:
        f = float(v)
    except (TypeError, ValueError):
        f = float("nan")
    if f in (0.0, 1.0, -1.0):
        return int(f)
    raise _Reject(f"label {v!r} is not 0 or 1", "use 1 (relevant), 0 (not relevant) or omit it")


def _records_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip() == "":
                continue
            try:
                yield line_no, line.rstrip("\n"), json.loads(line)
            except json.JSONDecodeError as e:
                yield (
                    line_no,
                    line.rstrip("\n"),
                    _Reject(
                        f"malformed JSON ({e.msg} at column {e.colno})",
                        "fix the line's JSON syntax",
                    ),
                )


def _records_csv(path: Path) -> Iterator[tuple[int, str, Any]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for rec in reader:
            if None in rec:  # more cells than header names
                yield (
                    reader.line_num,
                    str(rec),
                    _Reject("more cells than columns", "quote cells that contain commas"),
                )
                continue
            raw = ",".join("" if v is None else v for v in rec.values())
            yield reader.line_num, raw, {k: (v if v != "" else None) for k, v in rec.items()}


def _records_parquet(path: Path) -> Iterator[tuple[int, str, Any]]:
    if (
        importlib.util.find_spec("pyarrow") is None
        and importlib.util.find_spec("fastparquet") is None
    ):
        raise ImportError(f"reading {path} needs the 'pyarrow' package: pip install pyarrow")
    frame = pd.read_parquet(path)
    for i, rec in enumerate(frame.to_dict("records"), 1):
        yield i, json.dumps(rec, default=str, ensure_ascii=False), rec


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
        for line_no, raw, rec in _reader(path)(path):
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
                        f"duplicate id {row[0]!r} (first at {first_seen[row[0]]})",
                        "give every row a unique id",
                    )
                first_seen[row[0]] = where
                rows.append(row)
            except _Reject as r:
                rejected.append((str(path), line_no, f"{r.reason}; fix: {r.fix}", raw))
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
            f"{len(rejected)} bad row(s) in {', '.join(map(str, files))}:\n{shown}{more}\n"
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
    empty = df["query"].astype(str).str.strip() == ""
    if empty.any():
        raise RelevanceDataError(f"empty query in row(s) with id {list(df.loc[empty, 'id'][:5])}")


def _jsonl_record(row: dict) -> dict:
    rid = row["id"]
    rec: dict[str, Any] = {"id": int(rid) if rid.isdigit() and not rid.startswith("0") else rid}
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


def write(df: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a table atomically; the format follows the suffix.

    ``.jsonl``/``.json``: the competition format (``origin_query``, ``category_path`` for QC,
    ``item_title`` for QI, ``label`` unless -1), with provenance keys on synthesized rows.
    ``.csv``/``.parquet``: the schema's columns. An existing file is never replaced unless
    ``overwrite=True``; the message says so more firmly for a file that :func:`load` read in
    this process (or one listed in ``df.attrs["source_files"]``).
    """
    validate(df)
    path = Path(path)
    inputs = _INPUT_FILES | {Path(p) for p in df.attrs.get("source_files", [])}
    if path.exists() and not overwrite:
        what = "it is an input file" if path.resolve() in inputs else "it exists"
        raise RelevanceDataError(
            f"refusing to overwrite {path}: {what}; write elsewhere or pass overwrite=True "
            "(--overwrite on the command line)"
        )
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise RelevanceDataError(
            f"{path}: unknown file type {suffix!r}; expected one of {', '.join(_READERS)}"
        )
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ImportError(f"writing {path} needs the 'pyarrow' package: pip install pyarrow")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        table = _typed(df)
        if suffix in (".jsonl", ".json"):
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for row in table.to_dict("records"):
                    f.write(json.dumps(_jsonl_record(row), ensure_ascii=False) + "\n")
        else:
            os.close(fd)
            if suffix == ".csv":
                table.to_csv(tmp, index=False)
            else:
                table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
