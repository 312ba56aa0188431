"""Triton kernel of exact top-k search: fused similarity and running top-k.

Each program takes BLOCK_Q queries and streams the corpus in tiles of BLOCK_N
rows: scores are computed in float64 (tl.dot for ip/cosine -- float64 MMAs on
sm_80+ -- differences for l2), rounded to float32 and packed with the row id
into one int64 sort key (orderable score bits high, inverted id low), so that
one descending sort orders by score and then by lower id. Each query keeps its
KP best keys; a tile is merged only when it holds a key better than some
query's worst kept one (after the first tiles, rarely), by sorting: memory stays
O(BLOCK_Q * (KP + BLOCK_N)), never a Q x N score matrix.
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
    ROWS_PER_SPLIT,
    METRIC: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
    KP: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """out[q, s, :KP] = the KP best packed keys of query q among the corpus rows
    of split s = program_id(1), i.e. rows [s * ROWS_PER_SPLIT, (s + 1) *
    ROWS_PER_SPLIT) (descending). Splits let a few query blocks fill the card;
    the launcher merges them.

    Corpus tiles are BLOCK_N rows (a multiple of KP). A tile is merged into the
    kept keys only when one of its keys beats some query's worst kept key; a
    merge first cuts the tile to its KP best keys per query (a sort, then the
    first of BLOCK_N / KP groups), then sorts them with the kept keys.
    """
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    splits = tl.num_programs(1).to(tl.int64)
    # int64 offsets: qi * D and ci * D pass 2^31 on large inputs
    qi = pid * BLOCK_Q + tl.arange(0, BLOCK_Q).to(tl.int64)
    qmask = qi < NQ
    lo = split * ROWS_PER_SPLIT
    hi = tl.minimum(lo + ROWS_PER_SPLIT, N)
    best = tl.full((BLOCK_Q, KP), -9223372036854775808, tl.int64)  # "no candidate"
    worst = tl.full((BLOCK_Q,), -9223372036854775808, tl.int64)  # lowest kept key
    for start in range(0, ROWS_PER_SPLIT, BLOCK_N):
        ci = lo + start + tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = ci < hi
        acc = tl.zeros((BLOCK_Q, BLOCK_N), tl.float64)
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
            ci[None, :].to(tl.int64) + tl.zeros((BLOCK_Q, BLOCK_N), tl.int64),
            HIGHER_BETTER=METRIC != 0,
        )
        key = tl.where(cmask[None, :], key, -9223372036854775808)
        if tl.sum((key > worst[:, None]).to(tl.int32)) > 0:
            if BLOCK_N == KP:
                top = key
            else:
                srt = tl.sort(key, dim=1, descending=True)
                groups = tl.reshape(srt, (BLOCK_Q, BLOCK_N // KP, KP))
                first_group = (tl.arange(0, BLOCK_N // KP) == 0)[None, :, None]
                top = tl.max(tl.where(first_group, groups, -9223372036854775808), axis=1)
            both = tl.reshape(tl.join(best, top), (BLOCK_Q, 2 * KP))
            both = tl.sort(both, dim=1, descending=True)
            best, _second = tl.split(tl.permute(tl.reshape(both, (BLOCK_Q, 2, KP)), (0, 2, 1)))
            worst = tl.min(best, axis=1)
    ko = tl.arange(0, KP).to(tl.int64)
    out = out_ptr + (qi[:, None] * splits + split) * KP + ko[None, :]
    tl.store(out, best, mask=qmask[:, None])
