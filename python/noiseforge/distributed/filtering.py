"""Self-validation filtering on Ray: one task per (model, seed, fold), the local vote.

:func:`self_validation_filter_ray` is
:func:`noiseforge.relevance.filtering.self_validation_filter` with its out-of-fold
models trained as Ray tasks: each task (0.5 CPU, :data:`TASK_CPUS`) fits a fresh
model on the other folds and predicts its held-out fold. The table and each model
factory go to the object store once (``ray.put``); a task gets their references,
the seed's fold assignment and its fold index.

The folds are drawn on the driver with :func:`grouped_folds` (from the run's
seed), and every model comes from the factory inside its task, so what a task
computes depends on (model, seed, fold) only, never on the worker that runs it.
The driver places each fold's probabilities where the local engine places them
and reduces the votes the same way (:func:`flag_votes`, ``vote_histogram``), so
the result equals the local engine's :class:`FilterResult` (flags,
probabilities, kept rows, report) for the same seeds.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from noiseforge.distributed.runtime import (
    TASK_CPUS,
    configure_threads,
    connect,
    gather,
    require_ray,
)
from noiseforge.relevance.filtering import (
    FilterResult,
    flag_votes,
    grouped_folds,
    prepare_filter,
    reduce_votes,
)
from noiseforge.relevance.model import RelevanceModel

__all__ = ["filter_engine", "fold_proba", "self_validation_filter_ray"]


def fold_proba(
    df: pd.DataFrame,
    model_factory: Callable[[], RelevanceModel],
    folds: np.ndarray,
    fold: int,
) -> np.ndarray:
    """p(relevant) of the rows of ``fold`` from a new model fitted on the other folds
    (the body of one Ray task; ``df`` has a 0..n-1 index)."""
    configure_threads()
    held = folds == fold
    model = model_factory().fit(df[~held].reset_index(drop=True))
    return np.asarray(model.predict_proba(df[held].reset_index(drop=True)), dtype=np.float64)


def self_validation_filter_ray(
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
    address: str | None = None,
) -> FilterResult:
    """:func:`~noiseforge.relevance.filtering.self_validation_filter` on Ray (same
    arguments, same :class:`FilterResult`).

    One Ray task per (model factory, seed, fold), each asking for
    :data:`~noiseforge.distributed.runtime.TASK_CPUS`; ``address`` is the Ray
    cluster (:func:`noiseforge.distributed.connect`). The factories travel to the
    workers as their pickle (cloudpickle: a lambda or closure works) and must
    build the same model there as here -- a model seeded by its own arguments,
    not by the process's state -- for the result to equal the local engine's.

    Returns
    -------
    FilterResult.
    """
    df, labels, factories = prepare_filter(df, model_factories, confidence, action, review_path)
    connect(address)
    ray = require_ray()
    task = ray.remote(num_cpus=TASK_CPUS)(fold_proba)
    df_ref = ray.put(df)
    factory_refs = [ray.put(f) for f in factories]
    folds_of = {seed: grouped_folds(df, k, seed=seed) for seed in dict.fromkeys(seeds)}
    folds_refs = {seed: ray.put(folds) for seed, folds in folds_of.items()}
    jobs: list[tuple[int, int, int]] = []  # (factory, seed, fold), in the local engine's order
    refs = []
    for i, factory_ref in enumerate(factory_refs):
        for seed in folds_of:  # a seed given twice is the same run: one task each fold
            for j in range(k):
                if not (folds_of[seed] == j).any():
                    continue
                jobs.append((i, seed, j))
                refs.append(task.remote(df_ref, factory_ref, folds_refs[seed], j))
    results = dict(zip(jobs, gather(ray, refs), strict=True))
    runs, probas = [], []
    for i in range(len(factories)):
        for seed in seeds:
            p = np.full(len(df), np.nan, dtype=np.float64)
            for j in range(k):
                if (i, seed, j) in results:
                    p[folds_of[seed] == j] = results[(i, seed, j)]
            probas.append(p)
            runs.append(flag_votes(labels, p, confidence, band))
    return reduce_votes(df, labels, runs, probas, band, min_votes, action, review_path)


def filter_engine(
    address: str | None = None, *, num_cpus: int | None = None
) -> Callable[..., FilterResult]:
    """What ``noiseforge relevance filter --engine ray`` runs: :func:`self_validation_filter_ray`
    on the cluster at ``address``, connected now (a missing cluster fails before any work)."""
    connect(address, num_cpus=num_cpus)
    return functools.partial(self_validation_filter_ray, address=address)
