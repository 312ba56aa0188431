"""Reference (torch backend) of exact k-nearest-neighbour search with exclusions.

Scores are computed in float64 and rounded to float32; a candidate ranks above
another when its score is better (higher for ip/cosine, lower for l2) or equal
with a lower corpus id. Every backend follows this rule, so ids agree exactly.
"""

from __future__ import annotations

import torch

HIGHER_IS_BETTER = {"ip": True, "cosine": True, "l2": False}


def scores_f64(q: torch.Tensor, c: torch.Tensor, metric: str) -> torch.Tensor:
    """(Q, n) float64 scores of float32 queries against a corpus chunk."""
    qd, cd = q.double(), c.double()
    if metric == "l2":
        return ((qd[:, None, :] - cd[None, :, :]) ** 2).sum(-1)
    s = qd @ cd.T
    if metric == "cosine":
        s = s / (qd.norm(dim=1, keepdim=True) * cd.norm(dim=1)[None, :])
    return s


def knn_topk_reference(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    metric: str,
    offsets: torch.Tensor | None = None,
    excluded: torch.Tensor | None = None,
    chunk: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked exact search: memory O(Q * (chunk + k)), never the full Q x N matrix.

    ``offsets``/``excluded``: CSR exclusion lists of corpus row ids per query.
    Returns (ids int64 (Q, k), scores float32 (Q, k)); -1 / NaN pad rows with
    fewer than k admissible vectors.
    """
    nq, n = queries.shape[0], corpus.shape[0]
    device = queries.device
    higher = HIGHER_IS_BETTER[metric]
    if metric == "l2":
        chunk = max(1, min(chunk, (1 << 24) // max(1, nq * queries.shape[1])))
    worst = float("-inf") if higher else float("inf")
    best_s = torch.full((nq, 0), worst, dtype=torch.float32, device=device)
    best_i = torch.zeros((nq, 0), dtype=torch.int64, device=device)
    rows = cols = None
    if offsets is not None and excluded is not None and excluded.numel():
        counts = offsets[1:] - offsets[:-1]
        rows = torch.repeat_interleave(torch.arange(nq, device=device), counts.to(device))
        cols = excluded.to(device)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        s = scores_f64(queries, corpus[start:stop], metric).to(torch.float32)
        admissible = torch.ones_like(s, dtype=torch.bool)
        if rows is not None:
            inside = (cols >= start) & (cols < stop)
            admissible[rows[inside], cols[inside] - start] = False
        ids = torch.arange(start, stop, device=device).expand(nq, -1)
        # previous best (ids below start, already ordered) then this chunk in id order:
        # a stable sort on the score alone keeps equal scores in ascending id order
        cat_s = torch.cat([best_s, s], dim=1)
        cat_i = torch.cat([best_i, ids], dim=1)
        cat_ok = torch.cat([best_i >= 0, admissible], dim=1)
        key = cat_s if not higher else -cat_s
        # two stable sorts: by score, then admissible entries first (no sentinel
        # value, so admissible +-inf scores are kept)
        by_score = torch.sort(key, dim=1, stable=True).indices
        inadmissible = (~torch.gather(cat_ok, 1, by_score)).to(torch.int8)
        order = torch.gather(by_score, 1, torch.sort(inadmissible, dim=1, stable=True).indices)
        order = order[:, :k]
        best_s = torch.gather(cat_s, 1, order)
        best_i = torch.where(
            torch.gather(cat_ok, 1, order),
            torch.gather(cat_i, 1, order),
            torch.full_like(order, -1),
        )
    pad = k - best_i.shape[1]
    if pad > 0:
        best_i = torch.cat([best_i, torch.full((nq, pad), -1, dtype=torch.int64, device=device)], 1)
        best_s = torch.cat([best_s, torch.full((nq, pad), float("nan"), device=device)], 1)
    best_s = torch.where(best_i >= 0, best_s, torch.full_like(best_s, float("nan")))
    return best_i, best_s
