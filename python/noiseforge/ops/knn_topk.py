"""Exact k-nearest-neighbour search with per-query exclusion lists.

The ground truth for the HNSW index and the exact path of hard-negative mining.
Scores are computed in float64 and rounded to float32; results are ordered by
score (higher first for ip/cosine, lower first for l2), equal scores by lower
corpus id, so every backend returns the same ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from noiseforge import _native
from noiseforge._common.validation import check_int
from noiseforge._common.vectors import METRICS, exclusion_csr
from noiseforge.ops import _backends as B
from noiseforge.ops import registry
from noiseforge.reference.knn_topk import knn_topk_reference

OP = "knn_topk"


@dataclass
class KnnTopkPlan:
    """A validated :func:`knn_topk` call."""

    queries: torch.Tensor  # (Q, D) float32 contiguous
    corpus: torch.Tensor  # (N, D) float32 contiguous
    k: int
    metric: str
    offsets: torch.Tensor | None  # (Q + 1,) int64 on CPU
    excluded: torch.Tensor | None  # (E,) int64 on CPU

    @property
    def device(self) -> torch.device:
        return self.queries.device


_KnnPlan = KnnTopkPlan  # the name before plans were public


def _matrix(name: str, x, device=None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or numpy array, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {x.dtype} (convert with .float())")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows of vectors), got shape {tuple(x.shape)}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but queries are on {device}")
    x = x.contiguous()
    first = B.first_nonfinite(x)
    if first >= 0:
        raise ValueError(f"{name} row {first // max(1, x.shape[1])} contains NaN or inf")
    return x


def plan_knn_topk(queries, corpus, k: int, *, metric: str = "cosine", exclude=None) -> KnnTopkPlan:
    """Validate a :func:`knn_topk` call (shapes, dtypes, devices, exclusions)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    q = _matrix("queries", queries)
    c = _matrix("corpus", corpus, q.device)
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but the corpus has {c.shape[1]}")
    k = check_int("k", k, 1)
    if k > c.shape[0]:
        raise ValueError(f"k={k} is larger than the corpus ({c.shape[0]} vectors)")
    if metric == "cosine":
        for name, t in (("queries", q), ("corpus", c)):
            # a float32 norm also underflows to 0 for tiny non-zero vectors
            # (~1e-23): such rows are checked entry by entry
            maybe = torch.nonzero(t.norm(dim=1) == 0).flatten()
            zero = maybe[~(t[maybe] != 0).any(dim=1)]
            if zero.numel():
                raise ValueError(
                    f"{name} row {int(zero[0])} is a zero vector: "
                    "its cosine similarity is undefined"
                )
    offsets = excluded = None
    csr = exclusion_csr(exclude, q.shape[0])
    if csr is not None:
        offsets, excluded = torch.from_numpy(csr[0]), torch.from_numpy(csr[1])
    return KnnTopkPlan(q, c, int(k), metric, offsets, excluded)


def _run_torch(p: KnnTopkPlan):
    return knn_topk_reference(p.queries, p.corpus, p.k, p.metric, p.offsets, p.excluded)


def _run_cpu(p: KnnTopkPlan):
    nq, d = p.queries.shape
    ids = torch.empty((nq, p.k), dtype=torch.int64)
    scores = torch.empty((nq, p.k), dtype=torch.float32)
    _native.native().knn_topk_cpu(
        p.queries.data_ptr(),
        nq,
        p.corpus.data_ptr(),
        p.corpus.shape[0],
        d,
        p.k,
        METRICS[p.metric],
        0 if p.offsets is None else p.offsets.data_ptr(),
        0 if p.excluded is None else p.excluded.data_ptr(),
        ids.data_ptr(),
        scores.data_ptr(),
        B.cpu_threads(),
    )
    return ids, scores


_INT64_MIN = -(1 << 63)
# The kernel keeps KP keys per query in registers and sorts 2 * KP of them per
# corpus tile; its compile time grows steeply with KP (measured for sm_90 on a
# 2-core CPU: 3 s at 64, 7 s at 256 with 16-query tiles, 354 s at 1024), so wider cases go to the
# torch backend, which runs on the same GPU.
_TRITON_MAX_KP = 256


# The Triton kernel's tile: BLOCK_Q queries x BLOCK_N corpus rows, BLOCK_D
# dimensions per step (8 for l2), num_warps, and the number of corpus splits
# (programs along the corpus, merged afterwards; 0 = about four programs per SM).
# Not yet tuned on a GPU (none was lent so far):
# $NOISEFORGE_KNN_TRITON="BQ,BN,BD,WARPS[,SPLITS]" overrides it, and
# benchmarks/tune_knn_triton.py sweeps it on a card.
TRITON_TILE = (64, 64, 16, 4, 0)
# Under the interpreter (CPU tests) smaller tiles run faster; they still take the
# path that cuts a tile to its KP best keys (BLOCK_N > KP).
TRITON_TILE_INTERPRETER = (16, 32, 16, 4, 1)
TRITON_TILE_ENV = "NOISEFORGE_KNN_TRITON"


def triton_tile(kp: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_Q, BLOCK_N, BLOCK_D, num_warps, splits) for a kernel keeping kp keys per query."""
    tile = TRITON_TILE_INTERPRETER if B.triton_interpreting() else TRITON_TILE
    env = os.environ.get(TRITON_TILE_ENV, "").strip()
    if env:
        try:
            tile = tuple(int(v) for v in env.split(","))
        except ValueError:
            tile = ()
        if len(tile) == 4:
            tile = (*tile, 0)
        pow2 = all(v > 0 and v & (v - 1) == 0 for v in tile[:4])
        if len(tile) != 5 or not pow2 or min(tile[:3]) < 16 or tile[3] > 16 or tile[4] < 0:
            raise ValueError(
                f"${TRITON_TILE_ENV}={env!r}: give four powers of two "
                "'BLOCK_Q,BLOCK_N,BLOCK_D,WARPS' (tile sizes >= 16, warps <= 16) and optionally "
                "a number of corpus splits (0 = automatic), e.g. '64,64,16,4' or '64,64,16,4,8'"
            )
    block_q, block_n, block_d, warps, splits = tile
    if kp >= 128:  # wide sorts: compile time grows with BLOCK_Q x KP (96 s at 64 x 256)
        block_q = min(block_q, 16)
    return block_q, max(block_n, kp), block_d, warps, splits


def _triton_width(p: KnnTopkPlan) -> int:
    """Keys kept per query: k plus the longest exclusion list, as a power of two >= 16."""
    longest = 0
    if p.offsets is not None and p.offsets.numel() > 1:
        longest = int((p.offsets[1:] - p.offsets[:-1]).max())
    need = p.k + longest
    return max(16, 1 << (need - 1).bit_length())


def _triton_limits(p: KnnTopkPlan) -> list[str]:
    why = []
    if _triton_width(p) > _TRITON_MAX_KP:
        why.append(
            f"k plus the longest exclusion list exceeds {_TRITON_MAX_KP} (the kernel's "
            "running top-k width); use the torch backend (on the same GPU) or cpu"
        )
    if p.corpus.shape[0] >= 2**32:
        why.append("the corpus has 2**32 rows or more")
    return why


def _unpack(
    keys: torch.Tensor, higher_better: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, float32 scores and validity from the kernel's packed keys."""
    valid = keys != _INT64_MIN
    u = keys ^ _INT64_MIN
    ids = 0xFFFFFFFF - (u & 0xFFFFFFFF)
    flipped = (u >> 32) & 0xFFFFFFFF
    bits = torch.where(flipped >= 2**31, flipped - 2**31, -flipped - 1)  # int32 value range
    if not higher_better:
        bits = bits ^ _INT64_MIN >> 32  # undo the sign flip of the packed (negated) score
    scores = bits.to(torch.int32).view(torch.float32)
    return ids, scores, valid


def _run_triton(p: KnnTopkPlan):
    from noiseforge.kernels.knn_topk import knn_topk_kernel

    nq, d = p.queries.shape
    kp = _triton_width(p)
    qn = p.queries.double().norm(dim=1)
    cn = p.corpus.double().norm(dim=1)
    block_q, block_n, block_d, warps, splits = triton_tile(kp)
    if p.metric == "l2":  # the (BLOCK_Q, BLOCK_N, BLOCK_D) differences spill above 8
        block_d = 8
    n = p.corpus.shape[0]
    qblocks = B.cdiv(nq, block_q)
    if splits == 0:  # automatic: about four programs per SM, at least 4 tiles each
        sms = 1
        if p.device.type == "cuda":
            sms = torch.cuda.get_device_properties(p.device).multi_processor_count
        splits = max(1, min(B.cdiv(4 * sms, max(1, qblocks)), n // (4 * block_n)))
    rows = B.cdiv(B.cdiv(n, splits), block_n) * block_n  # corpus rows per split
    splits = B.cdiv(n, rows)
    launch = {} if B.triton_interpreting() else {"num_warps": warps}
    if nq:
        parts = torch.empty((nq, splits * kp), dtype=torch.int64, device=p.device)
        with B.device_guard(p.device):
            knn_topk_kernel[(qblocks, splits)](
                p.queries,
                p.corpus,
                qn,
                cn,
                parts,
                nq,
                n,
                d,
                rows,
                METRIC=METRICS[p.metric],
                BLOCK_Q=block_q,
                BLOCK_N=block_n,
                KP=kp,
                BLOCK_D=block_d,
                **launch,
            )
        # keys are unique (the row id is in them): the KP largest over all splits
        keys = parts if splits == 1 else parts.sort(dim=1, descending=True).values[:, :kp]
    else:
        keys = torch.empty((0, kp), dtype=torch.int64, device=p.device)
    ids, scores, ok = _unpack(keys, p.metric != "l2")
    if p.excluded is not None and p.excluded.numel():
        counts = p.offsets[1:] - p.offsets[:-1]
        rows = torch.repeat_interleave(torch.arange(nq), counts).to(p.device)
        hit = ids[rows] == p.excluded.to(p.device)[:, None]  # (E, kp)
        banned = torch.zeros_like(ok)
        banned.index_put_((rows,), hit, accumulate=True)
        ok &= ~banned
    pos = torch.arange(kp, device=p.device).expand(nq, kp)
    order = torch.argsort(torch.where(ok, pos, pos + kp), dim=1)[:, : p.k]
    keep = torch.gather(ok, 1, order)
    out_ids = torch.where(keep, torch.gather(ids, 1, order), torch.full_like(order, -1))
    out_scores = torch.where(
        keep, torch.gather(scores, 1, order), torch.full(order.shape, float("nan"), device=p.device)
    )
    return out_ids, out_scores


# No CUDA C++ kernel: on GPUs the Triton kernel is the fast path.
def _example(device: torch.device) -> KnnTopkPlan:
    queries = torch.tensor([[1.0, 0.0], [0.5, 0.5]], device=device)
    corpus = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]], device=device)
    return plan_knn_topk(queries, corpus, 2, exclude=[[0], []])


KNN_TOPK: registry.Op[KnnTopkPlan, tuple[torch.Tensor, torch.Tensor]] = registry.register_op(
    registry.Op(OP, KnnTopkPlan, plan_knn_topk, _example, "exact top-k neighbours with exclusions")
)
B.add_backends(
    KNN_TOPK, triton=_run_triton, cpu=_run_cpu, torch_ref=_run_torch, triton_check=_triton_limits
)


def knn_topk(
    queries, corpus, k: int, *, metric: str = "cosine", exclude=None, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Exact top-k: for each query the k best corpus rows that it does not exclude.

    Parameters
    ----------
    queries, corpus:
        (Q, D) and (N, D) float32 (tensors or numpy arrays), on the same device.
    k:
        1 <= k <= N.
    metric:
        ``"cosine"`` (similarity of the vectors, zero vectors rejected), ``"ip"``
        (inner product) or ``"l2"`` (squared Euclidean distance).
    exclude:
        Corpus row ids never to return, per query: a list of Q arrays or CSR
        ``(offsets, ids)``.

    Returns
    -------
    ids (Q, k) int64 and scores (Q, k) float32, best first, equal scores by lower
    id. Scores are float64 computations rounded to float32. A row is padded with
    id -1 and score NaN only when fewer than k rows are admissible.

    The torch backend works in chunks (memory O(Q x chunk), never Q x N). The
    cpu backend streams the corpus once per block of up to 32 queries, scores in
    float32 with a rigorous rounding-error bound per pair, and rescores in float64
    only the rows whose bound can reach a query's k best: the same ids and scores
    as scoring everything in float64, at about float32 speed (vectors so large that
    float32 sums could overflow are scored in float64 throughout).
    """
    p = plan_knn_topk(queries, corpus, k, metric=metric, exclude=exclude)
    return KNN_TOPK.run(p, backend)
