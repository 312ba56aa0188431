"""Semantic negative sampling: hard negatives mined with an embedding model and HNSW.

For each positive (query, target) row, the targets near the query in embedding
space are related but mostly wrong. We search the native HNSW index of the
task's distinct targets, skip the first ranks (often true synonyms of the
positive), keep candidates from a rank window whose similarity is below
``ratio`` x the positive's own similarity (a positive-aware threshold, as in
NV-Retriever's "TopK-PercPos", Moreira et al. 2024), and never mine a target
that is a known label of the query's family (the query, its translations and
rows synthesized from them; :func:`~noiseforge.relevance.filtering.query_groups`).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from noiseforge.index import HNSWIndex
from noiseforge.relevance.embed import Encoder, USEEncoder, embed_cached
from noiseforge.relevance.filtering import query_groups
from noiseforge.relevance.schema import COLUMNS

STRATEGY = "semantic_negative"


def negatives_needed(n_pos: int, n_neg: int, positive_share: float) -> int:
    """How many negatives to add so that positives are ``positive_share`` of the rows:
    ``ceil(n_pos / share - n_pos - n_neg)``, at least 0."""
    if not 0 < positive_share <= 1:
        raise ValueError(f"positive_share must be in (0, 1], got {positive_share}")
    return max(0, math.ceil(n_pos / positive_share - n_pos - n_neg - 1e-9))


def _unit(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (the ratio test compares cosines, whatever the encoder)."""
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def mine_semantic_negatives(
    df: pd.DataFrame,
    encoder: Encoder | None = None,
    *,
    rank_window: tuple[int, int] = (3, 30),
    ratio: float = 0.95,
    positive_share: float | None = 0.5,
    n_negatives: int | None = None,
    max_per_row: int = 1,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    M: int = 16,
    ef_construction: int = 200,
    progress: bool = True,
) -> pd.DataFrame:
    """New negative rows (the schema's columns) mined for the positives of ``df``.

    Per task: the distinct targets go into an :class:`HNSWIndex` (cosine; built
    with one thread so the graph, and so the result, is reproducible). For each
    positive row with query q and target t+, search ``hi`` neighbours of q with
    every target known for q's family excluded (positives *and* existing
    negatives: the first must never become negatives, the second would be
    duplicates); the candidates are the non-excluded ranks ``lo..hi`` (1-based)
    with ``cos(q, t) < ratio * cos(q, t+)``.

    How many: ``n_negatives`` when given, else enough to bring the task's
    positive share to ``positive_share`` (:func:`negatives_needed`); ``None``
    for both takes every candidate (up to ``max_per_row`` per positive row).
    Candidates are taken round-robin over positive rows (each row's best
    candidate first, rows in a seeded random order), so negatives spread across
    queries; a (family, target) pair is mined once.

    Returns
    -------
    DataFrame with ``id = '<source_id>:semantic_negative:<j>'``, the source
    row's task/language/query, the mined target, ``label = 0``, ``source_id``,
    ``strategy = 'semantic_negative'``, ``translator = ''`` and ``score`` = cosine
    similarity of query and mined target.
    """
    lo, hi = rank_window
    if not 1 <= lo <= hi:
        raise ValueError(f"rank_window must be 1 <= lo <= hi, got {rank_window}")
    if not 0 < ratio:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    if encoder is None:
        encoder = USEEncoder()
    df = df.reset_index(drop=True)
    family = query_groups(df)
    rng = np.random.default_rng(seed)
    out = []
    taken = set(df["id"].astype(str)) if "id" in df.columns else set()
    for task in sorted(df["task"].unique()):
        rows = np.flatnonzero((df["task"] == task).to_numpy())
        sub = df.iloc[rows]
        targets = pd.unique(sub["target"].astype(str))
        if len(targets) <= 1:
            continue
        tid_of = {t: i for i, t in enumerate(targets)}
        tid = sub["target"].astype(str).map(tid_of).to_numpy()
        fam = family[rows]
        known: dict[int, set[int]] = {}
        for f, t in zip(fam, tid, strict=True):
            known.setdefault(int(f), set()).add(int(t))
        labels = sub["label"].to_numpy()
        pos = np.flatnonzero(labels == 1)
        n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
        if n_negatives is not None:
            want = int(n_negatives)
        elif positive_share is not None:
            want = negatives_needed(n_pos, n_neg, positive_share)
        else:
            want = None
        if len(pos) == 0 or want == 0:
            continue
        tvec = _unit(embed_cached(encoder, list(targets), cache_dir=cache_dir, progress=progress))
        qtxt = sub["query"].astype(str).to_numpy()[pos]
        qvec = _unit(embed_cached(encoder, list(qtxt), cache_dir=cache_dir, progress=progress))
        index = HNSWIndex(encoder.dim, "cosine", M=M, ef_construction=ef_construction, seed=seed)
        index.add(tvec, num_threads=1)
        k = min(hi, len(targets))
        exclude = [np.fromiter(known[int(fam[i])], dtype=np.int64) for i in pos]
        admissible = np.array([len(targets) - len(e) for e in exclude])
        ids, scores = index.search(qvec, k, exclude=exclude, ef=max(128, 4 * k))
        pos_sim = np.sum(qvec * tvec[tid[pos]], axis=1)
        # candidates[r] = this row's (target, score) in rank order, within the window
        candidates = []
        for r in range(len(pos)):
            keep = [
                (int(ids[r, c]), float(scores[r, c]))
                for c in range(lo - 1, min(k, admissible[r]))
                if ids[r, c] >= 0 and scores[r, c] < ratio * pos_sim[r]
            ]
            candidates.append(keep[:max_per_row])
        chosen: list[tuple[int, int, float]] = []  # (positive position, target id, score)
        seen: set[tuple[int, int]] = set()
        order = rng.permutation(len(pos))
        for rnd in range(max_per_row):
            for r in order:
                if want is not None and len(chosen) >= want:
                    break
                if rnd < len(candidates[r]):
                    t, s = candidates[r][rnd]
                    key = (int(fam[pos[r]]), t)
                    if key not in seen:
                        seen.add(key)
                        chosen.append((r, t, s))
        for j, (r, t, s) in enumerate(chosen):
            src = sub.iloc[pos[r]]
            source_id = str(src["id"]) if "id" in sub.columns else str(rows[pos[r]])
            new_id, n = f"{source_id}:{STRATEGY}:{j}", j
            while new_id in taken:  # mined before (a second pass over a mined file)
                n += len(chosen)
                new_id = f"{source_id}:{STRATEGY}:{n}"
            taken.add(new_id)
            out.append(
                {
                    "id": new_id,
                    "task": task,
                    "language": src["language"],
                    "query": src["query"],
                    "target": targets[t],
                    "label": 0,
                    "source_id": source_id,
                    "strategy": STRATEGY,
                    "translator": "",
                    "score": s,
                }
            )
    return pd.DataFrame(out, columns=list(COLUMNS))


def add_semantic_negatives(
    df: pd.DataFrame, encoder: Encoder | None = None, **kwargs
) -> pd.DataFrame:
    """``df`` with :func:`mine_semantic_negatives` rows appended (missing provenance
    columns of ``df`` filled as for original rows)."""
    mined = mine_semantic_negatives(df, encoder, **kwargs)
    base = df.copy()
    defaults = {"source_id": "", "strategy": "original", "translator": "", "score": np.nan}
    for col, value in defaults.items():
        if col not in base.columns:
            base[col] = value
    return pd.concat([base, mined], ignore_index=True)
