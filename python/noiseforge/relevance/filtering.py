"""Self-validation filtering: find training rows whose label the model contradicts.

Confident-learning style (Northcutt et al., JAIR 2021): train on k-1 folds,
predict the held-out fold, so every row gets an out-of-fold p(relevant) from a
model that never saw it. Folds are grouped by query *family* (a query, its
translations and every row synthesized from it), so no query is in both a
training and its held-out fold. A row is flagged when the model's confidence in
the other label exceeds ``confidence`` (and, optionally, when p falls in a
boundary ``band``). Runs over several seeds/models vote (``vote_histogram``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from noiseforge.ops import vote_histogram
from noiseforge.relevance.groups import query_groups
from noiseforge.relevance.model import RelevanceModel

__all__ = ["query_groups"]  # re-exported: it lives in groups.py

#: vote classes of one run
KEEP, CONTRADICTED, BOUNDARY = 0, 1, 2


def grouped_folds(df: pd.DataFrame, k: int = 5, *, seed: int = 0) -> np.ndarray:
    """(n,) fold index in [0, k): query families (:func:`query_groups`) assigned to
    folds at random (seeded), balancing rows greedily (largest family first)."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    fam = query_groups(df)
    sizes = np.bincount(fam)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(k, dtype=np.int64)
    fold_of_family = np.empty(len(sizes), dtype=np.int64)
    for f in order:
        j = int(np.argmin(load + rng.random(k) * 1e-3))
        fold_of_family[f] = j
        load[j] += sizes[f]
    return fold_of_family[fam]


def out_of_fold_proba(
    df: pd.DataFrame,
    model_factory: Callable[[], RelevanceModel],
    *,
    k: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """(n,) p(relevant) of each row from a model trained on the other folds."""
    folds = grouped_folds(df, k, seed=seed)
    out = np.full(len(df), np.nan, dtype=np.float64)
    for j in range(k):
        held = folds == j
        if not held.any():
            continue
        model = model_factory().fit(df[~held].reset_index(drop=True))
        out[held] = model.predict_proba(df[held].reset_index(drop=True))
    return out


def flag_votes(
    labels: np.ndarray, proba: np.ndarray, confidence: float, band: tuple[float, float] | None
) -> np.ndarray:
    """Vote class of each row for one run: CONTRADICTED when the model's p of the
    *other* label is > ``confidence``, BOUNDARY when ``band[0] <= p <= band[1]``, else KEEP."""
    p_other = np.where(labels == 1, 1.0 - proba, proba)
    votes = np.full(len(labels), KEEP, dtype=np.int64)
    if band is not None:
        votes[(proba >= band[0]) & (proba <= band[1])] = BOUNDARY
    votes[p_other > confidence] = CONTRADICTED
    return votes


@dataclass
class FilterResult:
    """``flags``: per row (aligned with the input) the out-of-fold mean p, vote
    counts and ``flagged``; ``kept``: the input without flagged rows (or all of
    it when action="flag"); ``report``: flagged share per language and label."""

    kept: pd.DataFrame
    flags: pd.DataFrame
    report: pd.DataFrame


def self_validation_filter(
    df: pd.DataFrame,
    model_factories: Callable[[], RelevanceModel] | Sequence[Callable[[], RelevanceModel]],
    *,
    k: int = 5,
    seeds: Sequence[int] = (0,),
    confidence: float = 0.8,
    band: tuple[float, float] | None = None,
    min_votes: int | None = None,
    action: str = "remove",
    review_path: str | os.PathLike | None = None,
) -> FilterResult:
    """Flag (and remove) rows whose label out-of-fold models confidently contradict.

    Each (factory, seed) pair is one run: grouped k-fold out-of-fold
    probabilities, then a vote per row (:func:`flag_votes`). Votes are counted
    with ``vote_histogram`` over ``R`` runs; a row is flagged when its
    CONTRADICTED (+ BOUNDARY, when ``band`` is given) votes reach ``min_votes``
    (default: a strict majority of runs).

    Parameters
    ----------
    df: labelled table (schema columns; ``id`` needed for the review file).
    model_factories: one zero-argument model factory or several (several models
        and seeds make the vote robust to one model's blind spots).
    confidence: in (0.5, 1): flag when p(other label) exceeds it.
    band: optional (low, high): also flag rows with p in the band.
    action: ``"remove"`` (drop flagged rows), ``"flag"`` (keep all rows) or
        ``"review"`` (keep all and write flagged rows to ``review_path`` as CSV
        with their probabilities, for a human to check).

    Returns
    -------
    FilterResult.
    """
    df, labels, factories = prepare_filter(df, model_factories, confidence, action, review_path)
    runs, probas = [], []
    for factory in factories:
        for seed in seeds:
            p = out_of_fold_proba(df, factory, k=k, seed=seed)
            probas.append(p)
            runs.append(flag_votes(labels, p, confidence, band))
    return reduce_votes(df, labels, runs, probas, band, min_votes, action, review_path)


def prepare_filter(
    df: pd.DataFrame,
    model_factories: Callable[[], RelevanceModel] | Sequence[Callable[[], RelevanceModel]],
    confidence: float,
    action: str,
    review_path: str | os.PathLike | None,
) -> tuple[pd.DataFrame, np.ndarray, list[Callable[[], RelevanceModel]]]:
    """The checks of :func:`self_validation_filter` (every engine runs them before any
    model is fitted): the table with a 0..n-1 index, its 0/1 labels, the factories."""
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    if action not in ("remove", "flag", "review"):
        raise ValueError(f"action must be 'remove', 'flag' or 'review', got {action!r}")
    if action == "review" and review_path is None:
        raise ValueError("action='review' needs review_path (a CSV file to write)")
    factories = [model_factories] if callable(model_factories) else list(model_factories)
    df = df.reset_index(drop=True)
    labels = df["label"].to_numpy()
    if np.isin(labels, (0, 1), invert=True).any():
        raise ValueError("self_validation_filter needs labelled rows (0/1)")
    return df, labels, factories


def reduce_votes(
    df: pd.DataFrame,
    labels: np.ndarray,
    runs: list[np.ndarray],
    probas: list[np.ndarray],
    band: tuple[float, float] | None,
    min_votes: int | None,
    action: str,
    review_path: str | os.PathLike | None,
) -> FilterResult:
    """The runs' votes (:func:`flag_votes` of each run) counted with ``vote_histogram``,
    and the :class:`FilterResult` built from them (every engine ends here)."""
    r = len(runs)
    index = torch.arange(len(df)).repeat(r)
    hist = vote_histogram(index, torch.from_numpy(np.concatenate(runs)), len(df), 3).numpy()
    min_votes = r // 2 + 1 if min_votes is None else min_votes
    against = hist[:, CONTRADICTED] + (hist[:, BOUNDARY] if band is not None else 0)
    flagged = against >= min_votes
    flags = pd.DataFrame(
        {
            "id": df["id"] if "id" in df.columns else np.arange(len(df)),
            "proba": np.mean(probas, axis=0),
            "votes_contradicted": hist[:, CONTRADICTED],
            "votes_boundary": hist[:, BOUNDARY],
            "flagged": flagged,
        }
    )
    report = (
        pd.DataFrame({"language": df["language"], "label": labels, "flagged": flagged})
        .groupby(["language", "label"])["flagged"]
        .agg(rows="size", flagged="sum", share="mean")
        .reset_index()
    )
    if action == "review":
        review = df[flagged].assign(
            proba=flags["proba"][flagged].to_numpy(),
            votes_contradicted=flags["votes_contradicted"][flagged].to_numpy(),
        )
        Path(review_path).parent.mkdir(parents=True, exist_ok=True)
        review.to_csv(review_path, index=False)
    kept = df[~flagged].reset_index(drop=True) if action == "remove" else df
    return FilterResult(kept=kept, flags=flags, report=report)
