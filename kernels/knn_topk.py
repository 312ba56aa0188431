"""Triton kernel of exact top-k search: fused similarity and running top-k.

Each program takes BLOCK_Q queries and streams the corpus in tiles of KP rows:
scores are computed in float64 (tl.dot for ip/cosine, differences for l2),
rounded to float32 and packed with the row id into one int64 sort key
(orderable score bits high, inverted id low), so that one descending sort
orders by score and then by lower id. The KP best keys of each query are
merged with every tile by sorting the 2*KP keys and keeping the first half:
memory stays O(BLOCK_Q * KP), never a Q x N score matrix.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _pack(score, ids, HIGHER_BETTER: tl.constexpr):
    # float32 -> uint32 bits whose unsigned order is the order of "better";
    # -0.0 becomes +0.0 first so that equal scores tie (and the lower id wins)
    score = tl.where(score == 0.0, 0.0, score)
    bits = score.to(tl.int32, bitcast=True)
    if not HIGHER_BETTER:
        bits = bits ^ -2147483648  # negate: flip the sign bit
    flipped = tl.where(bits < 0, ~bits, bits ^ -2147483648)  # monotone to unsigned order
    hi = flipped.to(tl.uint32, bitcast=True).to(tl.int64) << 32
    lo = (4294967295 - ids).to(tl.int64)  # lower id -> larger key
    return (hi | lo) ^ -9223372036854775808  # make the unsigned order a signed order


@triton.jit
def knn_topk_kernel(
    q_ptr,
    c_ptr,
    qn_ptr,
    cn_ptr,
    out_ptr,
    NQ,
    N,
    D,
    METRIC: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    KP: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """out[q, :KP] = the KP best packed keys of query q (descending)."""
    pid = tl.program_id(0)
    qi = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    qmask = qi < NQ
    best = tl.full((BLOCK_Q, KP), -9223372036854775808, tl.int64)  # "no candidate"
    for start in range(0, N, KP):
        ci = start + tl.arange(0, KP)
        cmask = ci < N
        acc = tl.zeros((BLOCK_Q, KP), tl.float64)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + tl.arange(0, BLOCK_D)
            dmask = dd < D
            q = tl.load(
                q_ptr + qi[:, None] * D + dd[None, :],
                mask=qmask[:, None] & dmask[None, :],
                other=0.0,
            ).to(tl.float64)
            c = tl.load(
                c_ptr + ci[:, None] * D + dd[None, :],
                mask=cmask[:, None] & dmask[None, :],
                other=0.0,
            ).to(tl.float64)
            if METRIC == 0:  # differences, not |q|^2 - 2 q.c + |c|^2: no cancellation
                diff = q[:, None, :] - c[None, :, :]
                acc += tl.sum(diff * diff, axis=2)
            else:
                acc += tl.dot(q, tl.trans(c))
        if METRIC == 2:
            qn = tl.load(qn_ptr + qi, mask=qmask, other=1.0)
            cn = tl.load(cn_ptr + ci, mask=cmask, other=1.0)
            acc = acc / (qn[:, None] * cn[None, :])
        score = acc.to(tl.float32)
        key = _pack(
            score,
            ci[None, :].to(tl.int64) + tl.zeros((BLOCK_Q, KP), tl.int64),
            HIGHER_BETTER=METRIC != 0,
        )
        key = tl.where(cmask[None, :], key, -9223372036854775808)
        both = tl.reshape(tl.join(best, key), (BLOCK_Q, 2 * KP))
        both = tl.sort(both, dim=1, descending=True)
        first, _second = tl.split(tl.permute(tl.reshape(both, (BLOCK_Q, 2, KP)), (0, 2, 1)))
        best = first
    ko = tl.arange(0, KP)
    tl.store(out_ptr + qi[:, None] * KP + ko[None, :], best, mask=qmask[:, None])
