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
from collections.abc import Callable
from dataclasses import dataclass

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


#: ``(qvec, tvec, k, exclude) -> (ids, scores)``: the ``k`` best non-excluded targets
#: of each query, best first (ids (nq, k) int64 with -1 padding, scores (nq, k) float32)
SearchFn = Callable[[np.ndarray, np.ndarray, int, list[np.ndarray]], tuple[np.ndarray, np.ndarray]]
#: ``texts -> (len(texts), dim)`` float32 embeddings
EmbedFn = Callable[[list[str]], np.ndarray]


@dataclass
class MiningTask:
    """What the mining of one task needs, before any embedding (:func:`prepare_mining`).

    Positions are into the prepared table (a 0..n-1 index). ``targets``: the task's
    distinct targets in order of first appearance; a target's id is its position.
    ``tid``/``fam``: per row of the task, its target id and query family.
    ``pos``: positions (within ``rows``) of the positive rows, the mining queries;
    ``queries``: their query texts. ``exclude``: per positive row, the ids of every
    target known for its family (never mined). ``want``: how many negatives to mine
    (None: every candidate). ``k``: neighbours per query, ``min(hi, len(targets))``.
    """

    task: str
    rows: np.ndarray
    targets: np.ndarray
    tid: np.ndarray
    fam: np.ndarray
    pos: np.ndarray
    queries: list[str]
    exclude: list[np.ndarray]
    want: int | None
    k: int


@dataclass
class MiningPlan:
    """The prepared table, its query families, the tasks to mine (sorted by name) and
    the row ids already in use (mined ids avoid them)."""

    df: pd.DataFrame
    family: np.ndarray
    tasks: list[MiningTask]
    taken: set[str]


def check_mining_args(rank_window: tuple[int, int], ratio: float) -> None:
    """The argument checks every mining engine runs before any work."""
    lo, hi = rank_window
    if not 1 <= lo <= hi:
        raise ValueError(f"rank_window must be 1 <= lo <= hi, got {rank_window}")
    if not 0 < ratio:
        raise ValueError(f"ratio must be > 0, got {ratio}")


def prepare_mining(
    df: pd.DataFrame,
    *,
    rank_window: tuple[int, int],
    positive_share: float | None,
    n_negatives: int | None,
) -> MiningPlan:
    """Step (a) of :func:`mine_semantic_negatives`, shared by every engine: the query
    families (computed once for the whole table) and, per task with at least two
    distinct targets, a positive row and something to mine, a :class:`MiningTask`."""
    hi = rank_window[1]
    df = df.reset_index(drop=True)
    family = query_groups(df)
    taken = set(df["id"].astype(str)) if "id" in df.columns else set()
    tasks = []
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
        exclude = [np.fromiter(known[int(fam[i])], dtype=np.int64) for i in pos]
        tasks.append(
            MiningTask(
                task=task,
                rows=rows,
                targets=targets,
                tid=tid,
                fam=fam,
                pos=pos,
                queries=[str(q) for q in sub["query"].astype(str).to_numpy()[pos]],
                exclude=exclude,
                want=want,
                k=min(hi, len(targets)),
            )
        )
    return MiningPlan(df=df, family=family, tasks=tasks, taken=taken)


def embed_task(task: MiningTask, embed: EmbedFn) -> tuple[np.ndarray, np.ndarray]:
    """(query vectors (len(pos), dim), target vectors (len(targets), dim)), unit rows."""
    tvec = _unit(embed(list(task.targets)))
    qvec = _unit(embed(task.queries))
    return qvec, tvec


def search_ef(k: int) -> int:
    """The HNSW beam width every engine searches with: ``max(128, 4k)``."""
    return max(128, 4 * k)


def hnsw_search(*, M: int = 16, ef_construction: int = 200, seed: int = 0) -> SearchFn:
    """Step (b), the local engine's search: an :class:`HNSWIndex` (cosine) of the
    targets built with one thread (a reproducible graph), searched with
    ``ef = max(128, 4k)`` and the exclusion lists."""

    def search(
        qvec: np.ndarray, tvec: np.ndarray, k: int, exclude: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        index = HNSWIndex(tvec.shape[1], "cosine", M=M, ef_construction=ef_construction, seed=seed)
        index.add(tvec, num_threads=1)
        return index.search(qvec, k, exclude=exclude, ef=search_ef(k))

    return search


def pick_negatives(
    plan: MiningPlan,
    task: MiningTask,
    qvec: np.ndarray,
    tvec: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    *,
    rank_window: tuple[int, int],
    ratio: float,
    max_per_row: int,
    rng: np.random.Generator,
) -> list[dict]:
    """Step (c), shared by every engine: the new rows of one task from its search result.

    A positive row's candidates are its non-excluded ranks ``lo..hi`` (1-based,
    within the admissible count) with ``cos(q, t) < ratio * cos(q, t+)``, at most
    ``max_per_row``; they are taken round-robin over the positive rows in the order
    ``rng.permutation`` draws (one draw per task, so tasks must come in plan order
    with one generator), a (family, target) pair once, until ``want`` are chosen.
    New ids avoid ``plan.taken`` (which is updated).
    """
    lo = rank_window[0]
    k, pos, fam, targets = task.k, task.pos, task.fam, task.targets
    admissible = np.array([len(targets) - len(e) for e in task.exclude])
    pos_sim = np.sum(qvec * tvec[task.tid[pos]], axis=1)
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
    want = task.want
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
    df, taken = plan.df, plan.taken
    out = []
    for j, (r, t, s) in enumerate(chosen):
        row = int(task.rows[pos[r]])
        src = df.iloc[row]
        source_id = str(src["id"]) if "id" in df.columns else str(row)
        new_id, n = f"{source_id}:{STRATEGY}:{j}", j
        while new_id in taken:  # mined before (a second pass over a mined file)
            n += len(chosen)
            new_id = f"{source_id}:{STRATEGY}:{n}"
        taken.add(new_id)
        out.append(
            {
                "id": new_id,
                "task": task.task,
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
    return out


def mined_frame(rows: list[dict]) -> pd.DataFrame:
    """The mined rows as a DataFrame with the schema's columns."""
    return pd.DataFrame(rows, columns=list(COLUMNS))


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
    search: SearchFn | None = None,
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

    ``search``: step (b), replacing the local HNSW search (:data:`SearchFn`; default
    :func:`hnsw_search` with ``M``, ``ef_construction`` and ``seed``). The steps
    (:func:`prepare_mining`, :func:`embed_task`, the search, :func:`pick_negatives`)
    are what the Ray engine (``noiseforge.distributed.mining``) runs too.

    Returns
    -------
    DataFrame with ``id = '<source_id>:semantic_negative:<j>'``, the source
    row's task/language/query, the mined target, ``label = 0``, ``source_id``,
    ``strategy = 'semantic_negative'``, ``translator = ''`` and ``score`` = cosine
    similarity of query and mined target.
    """
    check_mining_args(rank_window, ratio)
    if encoder is None:
        encoder = USEEncoder()
    plan = prepare_mining(
        df, rank_window=rank_window, positive_share=positive_share, n_negatives=n_negatives
    )
    if search is None:
        search = hnsw_search(M=M, ef_construction=ef_construction, seed=seed)

    def embed(texts: list[str]) -> np.ndarray:
        return embed_cached(encoder, texts, cache_dir=cache_dir, progress=progress)

    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for task in plan.tasks:
        qvec, tvec = embed_task(task, embed)
        ids, scores = search(qvec, tvec, task.k, task.exclude)
        out += pick_negatives(
            plan,
            task,
            qvec,
            tvec,
            ids,
            scores,
            rank_window=rank_window,
            ratio=ratio,
            max_per_row=max_per_row,
            rng=rng,
        )
    return mined_frame(out)


def append_mined(df: pd.DataFrame, mined: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the ``mined`` rows appended, the provenance columns ``df`` lacks
    filled as for original rows (every engine's ``add_semantic_negatives`` ends here)."""
    base = df.copy()
    defaults = {"source_id": "", "strategy": "original", "translator": "", "score": np.nan}
    for col, value in defaults.items():
        if col not in base.columns:
            base[col] = value
    return pd.concat([base, mined], ignore_index=True)


def add_semantic_negatives(
    df: pd.DataFrame, encoder: Encoder | None = None, **kwargs
) -> pd.DataFrame:
    """``df`` with :func:`mine_semantic_negatives` rows appended (missing provenance
    columns of ``df`` filled as for original rows)."""
    return append_mined(df, mine_semantic_negatives(df, encoder, **kwargs))
