"""Vector data and exact answers for the index tests and benchmarks."""

from __future__ import annotations

import numpy as np


def clustered(n, d, seed, clusters=40, spread=0.35, normalize=True):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    x = centers[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))
    if normalize:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def exact(x, q, k, metric, exclude=None):
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        score = qn.astype(np.float64) @ xn.T.astype(np.float64)
    elif metric == "ip":
        score = q.astype(np.float64) @ x.T.astype(np.float64)
    else:
        score = -((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    if exclude is not None:
        for i, e in enumerate(exclude):
            score[i, e] = -np.inf
    return np.argsort(-score, axis=1, kind="stable")[:, :k]


def recall(found, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)])
