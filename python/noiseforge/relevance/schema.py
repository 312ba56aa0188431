"""The in-memory table of the relevance engine: one pandas DataFrame, these columns.

Competition files (JSON lines ``{"id","task","language","origin_query",
"category_path"|"item_title","label"}``) map onto it: ``origin_query`` ->
``query``, ``category_path`` (QC) or ``item_title`` (QI) -> ``target``.
Rows synthesized by a strategy carry provenance: the row they came from, the
strategy, the translator (for translations) and a score (e.g. the similarity of
a mined negative); original rows have ``strategy == "original"``.
"""

from __future__ import annotations

TASKS = ("QC", "QI")

#: column -> meaning; the order is the order of written files
COLUMNS: dict[str, str] = {
    "id": "row id (str); synthesized rows get '<source_id>:<strategy>:<n>'",
    "task": "'QC' (query vs category path) or 'QI' (query vs item title)",
    "language": "language code of the query (en, fr, es, ko, pt, ja, de, it, pl, ar, th, vn, id, ...)",
    "query": "the search query (origin_query in competition files)",
    "target": "category path (QC, lower-case, comma-separated levels) or item title (QI)",
    "label": "1 relevant, 0 not relevant, -1 unlabelled (test files)",
    "source_id": "id of the row this one was synthesized from ('' for original rows)",
    "strategy": "'original', 'translation', 'semantic_negative', ...",
    "translator": "translator name for translated rows, else ''",
    "score": "strategy score (e.g. similarity of a mined negative), NaN when none",
}
