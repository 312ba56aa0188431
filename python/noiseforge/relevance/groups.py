"""Query families: rows that share a query, or that were synthesized from one another."""

from __future__ import annotations

import numpy as np
import pandas as pd


def query_key(queries: pd.Series) -> pd.Series:
    """The query as the engine compares it: the same up to case and surrounding spaces."""
    return queries.astype(str).str.lower().str.strip()


def query_groups(df: pd.DataFrame) -> np.ndarray:
    """(n,) int64 family id: rows are in one family when they share a query (case and
    surrounding spaces aside) or when
    one was synthesized from the other (``source_id`` -> ``id``), transitively.

    Union-find over rows; a translation and its original (and all rows of either
    query) get the same id, so grouped folds and negative mining see them as one.
    """
    n = len(df)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first_of_query: dict[str, int] = {}
    for i, q in enumerate(query_key(df["query"]).to_numpy()):
        j = first_of_query.setdefault(q, i)
        if j != i:
            union(i, j)
    if "source_id" in df.columns and "id" in df.columns:
        pos_of_id = {str(v): i for i, v in enumerate(df["id"].to_numpy())}
        for i, src in enumerate(df["source_id"].fillna("").astype(str).to_numpy()):
            if src and src in pos_of_id:
                union(i, pos_of_id[src])
    roots = np.fromiter((find(i) for i in range(n)), dtype=np.int64, count=n)
    return pd.factorize(roots)[0].astype(np.int64)
