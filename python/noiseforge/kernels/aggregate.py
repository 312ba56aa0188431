"""Triton kernels of the label-aggregation ops: integer scatter-adds.

Values arrive already quantised to int64 (the fixed-point contract), so the
atomic adds are exact and the result does not depend on their order.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def scatter_add_kernel(
    index_ptr, labels_ptr, values_ptr, acc_ptr, M, C, HAS_VALUES: tl.constexpr, BLOCK: tl.constexpr
):
    """acc[index[i] * C + labels[i]] += values[i] (or 1)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = i < M
    idx = tl.load(index_ptr + i, mask=mask, other=0).to(tl.int64)
    lab = tl.load(labels_ptr + i, mask=mask, other=0).to(tl.int64)
    if HAS_VALUES:
        v = tl.load(values_ptr + i, mask=mask, other=0)
    else:
        v = tl.full((BLOCK,), 1, acc_ptr.dtype.element_ty)
    tl.atomic_add(acc_ptr + idx * C + lab, v, mask=mask, sem="relaxed")


@triton.jit
def scatter_rows_kernel(
    index_ptr, values_ptr, acc_ptr, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr
):
    """acc[index[i], c] += values[i, c] for every class c (soft labels)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    mi = i < M
    mask = mi[:, None] & (c < C)[None, :]
    idx = tl.load(index_ptr + i, mask=mi, other=0).to(tl.int64)
    v = tl.load(values_ptr + i[:, None] * C + c[None, :], mask=mask, other=0)
    tl.atomic_add(acc_ptr + idx[:, None] * C + c[None, :], v, mask=mask, sem="relaxed")
