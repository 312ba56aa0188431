"""Reference (torch backend) of the label-aggregation ops, with the fixed-point
contract of ``csrc/include/noiseforge/fixed_point.h`` for float sums."""

from __future__ import annotations

import math

import torch


def fixed_point_shift(max_abs: float, count: int) -> int:
    """k = 62 - e - bitlen(count), with max_abs <= 2^e (0 when there is nothing to sum)."""
    if max_abs <= 0.0 or count <= 0:
        return 0
    return 62 - math.frexp(max_abs)[1] - int(count).bit_length()


def quantize(values: torch.Tensor, shift: int) -> torch.Tensor:
    """int64 ``rint(w * 2^shift)`` of float32 values (round half to even, exact product)."""
    return torch.round(values.double() * (2.0**shift)).to(torch.int64)


def dequantize(sums: torch.Tensor, shift: int) -> torch.Tensor:
    """float32 ``float(double(S) * 2^-shift)`` of int64 sums."""
    return (sums.double() * (2.0**-shift)).to(torch.float32)


def accumulate_reference(
    index: torch.Tensor,
    num_inputs: int,
    num_classes: int,
    labels: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int | None]:
    """The (N, C) int64 accumulator of the scatter ops and its fixed-point shift
    (None for counts): counts (``labels``, no ``values``), weighted votes
    (``labels`` and (M,) ``values``) or soft labels ((M, C) ``values``)."""
    acc = torch.zeros((num_inputs, num_classes), dtype=torch.int64, device=index.device)
    rows = index.to(torch.int64)
    if labels is None:  # soft labels
        p = values.to(torch.float32)
        shift = fixed_point_shift(float(p.max()) if p.numel() else 0.0, p.shape[0])
        acc.index_add_(0, rows, quantize(p, shift))
        return acc, shift
    flat = rows * num_classes + labels.to(torch.int64)
    if values is None:
        acc.view(-1).index_add_(0, flat, torch.ones_like(flat))
        return acc, None
    w = values.to(torch.float32)
    shift = fixed_point_shift(float(w.max()) if w.numel() else 0.0, w.numel())
    acc.view(-1).index_add_(0, flat, quantize(w, shift))
    return acc, shift


def top1_from_sums(
    acc: torch.Tensor, shift: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(label, top, share, margin) of every row of an int64 accumulator -- the
    contract of the fused ``aggregate`` op on every backend.

    Values are the counts (``shift`` None) or the float32 fixed-point sums; the
    label is the lowest class id among the largest values (-1 for a row whose
    total is 0); ``top`` its value; share = top / total and margin = (top -
    runner-up) / total in float32, the runner-up being the second largest value
    (the winner's own value on a tie). A count row's total is its int64 sum as
    float32 (as in ``aggregate_top1``); a sum row's total is
    ``float32(hi * 2^(31-k) + lo * 2^-k)`` in float64, hi and lo being the exact
    sums of the cells' bits above and below bit 31 (soft-label rows can total
    more than int64 holds), so it is the exact total up to two roundings.
    """
    vals = acc if shift is None else dequantize(acc, shift)
    top, label = vals.max(dim=1)  # the first maximal index: ties go to the lowest id
    if vals.shape[1] > 1:
        second = vals.topk(2, dim=1).values[:, 1]
    else:
        second = torch.zeros_like(top)
    if shift is None:
        total = acc.sum(dim=1).to(torch.float32)
    else:
        hi = torch.bitwise_right_shift(acc, 31).sum(dim=1).double()
        lo = torch.bitwise_and(acc, 0x7FFFFFFF).sum(dim=1).double()
        total = (hi * 2.0 ** (31 - shift) + lo * 2.0 ** (-shift)).to(torch.float32)
    empty = ~(total > 0)
    safe = torch.where(empty, torch.ones_like(total), total)
    zero = torch.zeros_like(total)
    share = torch.where(empty, zero, top.to(torch.float32) / safe)
    margin = torch.where(empty, zero, (top - second).to(torch.float32) / safe)
    label = torch.where(empty, torch.full_like(label, -1), label)
    return label, top, share, margin


def vote_histogram_reference(
    index: torch.Tensor,
    labels: torch.Tensor,
    num_inputs: int,
    num_classes: int,
    weights: torch.Tensor | None = None,
    count_dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """(N, C) counts (``count_dtype``) or float32 weighted sums; inputs already validated."""
    acc, shift = accumulate_reference(index, num_inputs, num_classes, labels, weights)
    return acc.to(count_dtype) if shift is None else dequantize(acc, shift)


def soft_label_sum_reference(
    index: torch.Tensor, probs: torch.Tensor, num_inputs: int
) -> torch.Tensor:
    """(N, C) float32 sums of the (M, C) probability rows of each input."""
    acc, shift = accumulate_reference(index, num_inputs, probs.shape[1], values=probs)
    return dequantize(acc, shift)
