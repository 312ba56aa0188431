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


def vote_histogram_reference(
    index: torch.Tensor,
    labels: torch.Tensor,
    num_inputs: int,
    num_classes: int,
    weights: torch.Tensor | None = None,
    count_dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """(N, C) counts (``count_dtype``) or float32 weighted sums; inputs already validated."""
    flat = index.to(torch.int64) * num_classes + labels.to(torch.int64)
    cells = torch.zeros(num_inputs * num_classes, dtype=torch.int64, device=index.device)
    if weights is None:
        cells.index_add_(0, flat, torch.ones_like(flat))
        return cells.view(num_inputs, num_classes).to(count_dtype)
    w = weights.to(torch.float32)
    shift = fixed_point_shift(float(w.max()) if w.numel() else 0.0, w.numel())
    cells.index_add_(0, flat, quantize(w, shift))
    return dequantize(cells, shift).view(num_inputs, num_classes)


def soft_label_sum_reference(
    index: torch.Tensor, probs: torch.Tensor, num_inputs: int
) -> torch.Tensor:
    """(N, C) float32 sums of the (M, C) probability rows of each input."""
    p = probs.to(torch.float32)
    shift = fixed_point_shift(float(p.max()) if p.numel() else 0.0, p.shape[0])
    rows = torch.zeros((num_inputs, p.shape[1]), dtype=torch.int64, device=index.device)
    rows.index_add_(0, index.to(torch.int64), quantize(p, shift))
    return dequantize(rows, shift)
