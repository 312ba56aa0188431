"""Vector helpers shared by the exact top-k op and the HNSW index: metric codes (the
native kernels' numbering), integer id arrays and per-query exclusion lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# metric name -> the native kernels' code (csrc/cpu/knn_topk_kernels.cpp, csrc/index)
METRICS = {"l2": 0, "ip": 1, "cosine": 2}
METRIC_NAMES = {v: k for k, v in METRICS.items()}


def int64_ids(name: str, values, *, nonnegative: bool = False) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array of integers ({exc})") from None
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be integers, got dtype {arr.dtype}; convert with .astype(np.int64)"
        )
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64; {int(arr.max())} does not")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if nonnegative and arr.min() < 0:
        flat = arr.reshape(-1)
        r = int(np.flatnonzero(flat < 0)[0])
        raise ValueError(
            f"{name} must be >= 0 (search results pad short rows with id -1); "
            f"{name}[{r}] is {int(flat[r])}: give non-negative ids"
        )
    return arr


def exclusion_csr(exclude, nq: int) -> tuple[np.ndarray, np.ndarray] | None:
    """CSR (offsets, ids) from a list of per-query id arrays or a (offsets, ids) pair."""
    if exclude is None:
        return None
    if isinstance(exclude, tuple) and len(exclude) == 2:
        offsets = int64_ids("exclude offsets", exclude[0])
        ids = int64_ids("exclude ids", exclude[1]).reshape(-1)
        if (
            offsets.shape != (nq + 1,)
            or offsets[0] != 0
            or np.any(np.diff(offsets) < 0)
            or offsets[-1] != ids.size
        ):
            raise ValueError(
                f"exclude as CSR needs offsets of shape ({nq + 1},), starting at 0, "
                f"non-decreasing and ending at len(ids) = {ids.size} (a 2-tuple is read as "
                "CSR (offsets, ids); give per-query lists as a list)"
            )
        return offsets, ids
    if not isinstance(exclude, Sequence | np.ndarray | torch.Tensor) or isinstance(
        exclude, str | bytes
    ):
        raise TypeError(
            "exclude must be None, a list with one array of ids per query, or CSR "
            f"(offsets, ids); got {type(exclude).__name__}"
        )
    if len(exclude) != nq:
        raise ValueError(f"exclude has {len(exclude)} lists for {nq} queries; give one per query")
    lists = [int64_ids("exclude ids", e).reshape(-1) for e in exclude]
    offsets = np.zeros(nq + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([e.size for e in lists])
    ids = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    return offsets, np.ascontiguousarray(ids)
