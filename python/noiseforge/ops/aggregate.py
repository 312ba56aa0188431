"""Label aggregation: many noisy answers -> one label per private input.

``vote_histogram`` and ``soft_label_sum`` scatter answers into an (N, C) table;
``aggregate_top1`` reads the winning label, its vote share and the margin to
the runner-up. Used by LDPKiT's label aggregation and by self-validation
filtering's vote across folds.

Determinism: counts are integers; float sums follow a fixed-point contract
(each weight becomes ``rint(w * 2^k)`` in int64, the integers are summed
exactly, the sum is scaled back by ``2^-k``), so the same inputs give the same
bits on every run and every backend, in any summation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from noiseforge import _native
from noiseforge._common.validation import check_int
from noiseforge.ops import _backends as B
from noiseforge.ops import registry
from noiseforge.reference.aggregate import (
    accumulate_reference,
    dequantize,
    fixed_point_shift,
    quantize,
    soft_label_sum_reference,
    top1_from_sums,
    vote_histogram_reference,
)

OP = "vote_histogram"  # one registry entry serves both scatter ops
OP_TOP1 = "aggregate_labels"  # the fused scatter + top-1
_INT_TYPES = {torch.int32: 0, torch.int64: 1}
_MODES = {"counts": 0, "weighted": 1, "soft": 2}


@dataclass
class AggregatePlan:
    """A validated :func:`vote_histogram` / :func:`soft_label_sum` /
    :func:`aggregate_labels` call."""

    mode: str  # "counts" | "weighted" | "soft"
    index: torch.Tensor  # (M,) int32/int64, contiguous
    labels: torch.Tensor | None  # (M,) int32/int64, contiguous
    values: torch.Tensor | None  # (M,) or (M, C) float32, contiguous
    num_inputs: int
    num_classes: int
    count_dtype: torch.dtype

    @property
    def device(self) -> torch.device:
        return self.index.device

    @property
    def m(self) -> int:
        return self.index.shape[0]


_AggPlan = AggregatePlan  # the name before plans were public


# --------------------------------------------------------------------------- validation


def _check_ints(
    name: str, t: torch.Tensor, m: int | None, device: torch.device | None
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _INT_TYPES:
        raise TypeError(f"{name} must be int32 or int64, got {t.dtype} (convert with .long())")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one entry per answer), got shape {tuple(t.shape)}")
    if m is not None and t.shape[0] != m:
        raise ValueError(f"{name} has {t.shape[0]} entries but index has {m}; give one per answer")
    if device is not None and t.device != device:
        raise ValueError(
            f"{name} is on {t.device} but index is on {device}; move them to one device"
        )
    return t.contiguous()


def _check_floats(
    name: str, t: torch.Tensor, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(
            f"{name} must be float32, float16 or bfloat16, got {t.dtype} (use .float())"
        )
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    if t.device != device:
        raise ValueError(
            f"{name} is on {t.device} but index is on {device}; move them to one device"
        )
    return t.to(torch.float32).contiguous()


def _first(bad: torch.Tensor) -> int:
    """Flat position of the first True, or -1."""
    flat = bad.reshape(-1)
    return int(torch.nonzero(flat)[0]) if bool(flat.any()) else -1


def _raise_for(p: AggregatePlan, bad_index: int, bad_label: int, bad_value: int) -> None:
    """The error for the first offending position the checks found (if any)."""
    if bad_index >= 0:
        v = int(p.index[bad_index])
        raise ValueError(
            f"index[{bad_index}] = {v} is outside [0, num_inputs={p.num_inputs}); "
            "every answer must name an existing input"
        )
    if bad_label >= 0:
        assert p.labels is not None
        v = int(p.labels[bad_label])
        raise ValueError(f"labels[{bad_label}] = {v} is outside [0, num_classes={p.num_classes})")
    if bad_value >= 0:
        assert p.values is not None
        if p.mode == "soft":
            i, c = divmod(bad_value, p.num_classes)
            v = float(p.values[i, c])
            raise ValueError(f"probs[{i}, {c}] = {v} is not a finite number >= 0")
        v = float(p.values[bad_value])
        raise ValueError(
            f"weights[{bad_value}] = {v} is not a finite number >= 0 (votes cannot be negative)"
        )


def _validate_with_torch(p: AggregatePlan) -> None:
    """Content checks for the backends that do not check natively."""
    bad_index = _first((p.index < 0) | (p.index >= p.num_inputs))
    bad_label = -1 if p.labels is None else _first((p.labels < 0) | (p.labels >= p.num_classes))
    bad_value = -1
    if p.values is not None:
        bad_value = _first(~(torch.isfinite(p.values) & (p.values >= 0)))
    # same precedence as the native pass: index, then values, then labels
    if bad_index >= 0 or bad_value >= 0:
        _raise_for(p, bad_index, -1, bad_value)
    _raise_for(p, -1, bad_label, -1)


# --------------------------------------------------------------------------- backends


def _run_torch(p: AggregatePlan) -> torch.Tensor:
    _validate_with_torch(p)
    if p.mode == "soft":
        return soft_label_sum_reference(p.index, p.values, p.num_inputs)
    return vote_histogram_reference(
        p.index, p.labels, p.num_inputs, p.num_classes, weights=p.values, count_dtype=p.count_dtype
    )


def _native_aggregate(
    p: AggregatePlan, out: torch.Tensor | None, top1: tuple | None = None
) -> None:
    """The C++ pass: into the (N, C) table ``out``, or (fused) into the four
    ``top1`` outputs; raises the error for the first offending position."""
    labels = p.labels if p.labels is not None else p.index
    fused = {}
    if top1 is not None:
        fused = {
            f"top1_{k}": t.data_ptr()
            for k, t in zip(("label", "top", "share", "margin"), top1, strict=True)
        }
    try:
        bad_index, bad_label, bad_value, _sorted = _native.native().aggregate_cpu(
            p.index.data_ptr(),
            _INT_TYPES[p.index.dtype],
            labels.data_ptr(),
            _INT_TYPES[labels.dtype],
            p.values.data_ptr() if p.values is not None else 0,
            p.m,
            p.num_inputs,
            p.num_classes,
            _MODES[p.mode],
            out.data_ptr() if out is not None else 0,
            _INT_TYPES[p.count_dtype],
            B.cpu_threads(),
            **fused,
        )
    except MemoryError as e:
        raise MemoryError(
            f"not enough memory to aggregate {p.m} answers over {p.num_classes} classes (each "
            f"thread keeps rows of {p.num_classes} int64 sums, plus scratch space per answer); "
            "use fewer classes, fewer answers per call or fewer threads (torch.set_num_threads)"
        ) from e
    _raise_for(p, bad_index, bad_label, bad_value)


def _run_cpu(p: AggregatePlan) -> torch.Tensor:
    out_dtype = p.count_dtype if p.mode == "counts" else torch.float32
    out = torch.empty((p.num_inputs, p.num_classes), dtype=out_dtype)
    _native_aggregate(p, out)
    return out


def _quantized(p: AggregatePlan) -> tuple[torch.Tensor | None, int]:
    if p.values is None:
        return None, 0
    rows = p.m
    shift = fixed_point_shift(float(p.values.max()) if p.values.numel() else 0.0, rows)
    return quantize(p.values, shift), shift


def _table_dtype(p: AggregatePlan) -> torch.dtype:
    """The integer table of the GPU backends: the count dtype, or int64 fixed point."""
    return p.count_dtype if p.mode == "counts" else torch.int64


def _cuda_table(p: AggregatePlan, acc_dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """The (N, C) integer table filled by the CUDA kernels, and its fixed-point shift."""
    _validate_with_torch(p)
    q, shift = _quantized(p)
    acc = torch.zeros((p.num_inputs, p.num_classes), dtype=acc_dtype, device=p.device)
    mod, stream = _native.native(), B.cuda_stream(p.device)
    with B.device_guard(p.device):
        _launch_cuda(mod, p, q, acc, acc_dtype, stream)
    return acc, shift


def _run_cuda(p: AggregatePlan) -> torch.Tensor:
    acc, shift = _cuda_table(p, _table_dtype(p))
    return acc if p.mode == "counts" else dequantize(acc, shift)


def _launch_cuda(mod, p: AggregatePlan, q, acc, acc_dtype, stream) -> None:
    if p.mode == "soft":
        mod.scatter_rows_cuda(
            p.index.data_ptr(),
            p.index.dtype == torch.int64,
            q.data_ptr(),
            acc.data_ptr(),
            p.m,
            p.num_classes,
            stream,
        )
    else:
        mod.scatter_add_cuda(
            p.index.data_ptr(),
            p.index.dtype == torch.int64,
            p.labels.data_ptr(),
            p.labels.dtype == torch.int64,
            0 if q is None else q.data_ptr(),
            acc.data_ptr(),
            acc_dtype == torch.int64,
            p.m,
            p.num_classes,
            stream,
        )


def _triton_table(p: AggregatePlan, acc_dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """The (N, C) integer table filled by the Triton kernels, and its fixed-point shift."""
    _validate_with_torch(p)
    q, shift = _quantized(p)
    acc = torch.zeros((p.num_inputs, p.num_classes), dtype=acc_dtype, device=p.device)
    if p.m:
        with B.device_guard(p.device):
            _launch_triton(p, q, acc)
    return acc, shift


def _run_triton(p: AggregatePlan) -> torch.Tensor:
    acc, shift = _triton_table(p, _table_dtype(p))
    return acc if p.mode == "counts" else dequantize(acc, shift)


def _launch_triton(p: AggregatePlan, q, acc) -> None:
    from noiseforge.kernels.aggregate import scatter_add_kernel, scatter_rows_kernel

    if p.mode == "soft":
        bc = min(64, B.next_pow2(p.num_classes))
        grid = (B.cdiv(p.m, 64), B.cdiv(p.num_classes, bc))
        scatter_rows_kernel[grid](p.index, q, acc, p.m, p.num_classes, BLOCK_M=64, BLOCK_C=bc)
    else:
        values = q if q is not None else acc  # any tensor when HAS_VALUES is off
        grid = (B.cdiv(p.m, 1024),)
        scatter_add_kernel[grid](
            p.index, p.labels, values, acc, p.m, p.num_classes, HAS_VALUES=q is not None, BLOCK=1024
        )


def _triton_limits(p: AggregatePlan) -> list[str]:
    # soft labels: class blocks of 64 on the grid's second axis, which stops at 65535
    if p.mode == "soft" and B.cdiv(p.num_classes, 64) > 65535:
        return [
            f"{p.num_classes} classes exceed the soft-label kernel's grid "
            f"({65535 * 64}); use the cuda or torch backend"
        ]
    return []


def _example(device: torch.device) -> AggregatePlan:
    index = torch.tensor([0, 1, 1], dtype=torch.int64, device=device)
    labels = torch.tensor([2, 0, 0], dtype=torch.int64, device=device)
    return plan_vote_histogram(index, labels, 2, 3)


_EXACT = {torch.float32: (0.0, 0.0)}


def _declare(name: str, plan, summary: str, **runs) -> registry.Op:
    """Register one of the scatter ops: exact on every backend, the same Triton limits."""
    op = registry.register_op(registry.Op(name, AggregatePlan, plan, _example, summary))
    B.add_backends(op, tolerance=_EXACT, triton_check=_triton_limits, **runs)
    return op


VOTE_HISTOGRAM: registry.Op[AggregatePlan, torch.Tensor] = _declare(
    OP,
    lambda *args, **kwargs: plan_vote_histogram(*args, **kwargs),
    "per-input vote histograms and soft-label sums (exact fixed point)",
    cuda=_run_cuda,
    triton=_run_triton,
    cpu=_run_cpu,
    torch_ref=_run_torch,
)


# --------------------------------------------------------------------------- fused top-1


def _top1(p: AggregatePlan, acc: torch.Tensor, shift: int) -> Top1:
    return Top1(*top1_from_sums(acc, None if p.mode == "counts" else shift))


def _run_top1_torch(p: AggregatePlan) -> Top1:
    _validate_with_torch(p)
    labels = None if p.mode == "soft" else p.labels
    acc, shift = accumulate_reference(p.index, p.num_inputs, p.num_classes, labels, p.values)
    return Top1(*top1_from_sums(acc, shift))


def _run_top1_cpu(p: AggregatePlan) -> Top1:
    n = p.num_inputs
    label = torch.empty(n, dtype=torch.int64)
    top = torch.empty(n, dtype=torch.int64 if p.mode == "counts" else torch.float32)
    share, margin = torch.empty(n, dtype=torch.float32), torch.empty(n, dtype=torch.float32)
    if n == 0:  # nothing to write (and no answers: the plan checked)
        return Top1(label, top, share, margin)
    _native_aggregate(p, None, (label, top, share, margin))
    return Top1(label, top, share, margin)


# the GPU backends build the int64 table on the device, then torch reduces it
def _run_top1_cuda(p: AggregatePlan) -> Top1:
    return _top1(p, *_cuda_table(p, torch.int64))


def _run_top1_triton(p: AggregatePlan) -> Top1:
    return _top1(p, *_triton_table(p, torch.int64))


AGGREGATE_LABELS: registry.Op[AggregatePlan, Top1] = _declare(
    OP_TOP1,
    lambda *args, **kwargs: plan_aggregate_labels(*args, **kwargs),
    "fused vote histogram + top-1 label, share and margin per input",
    cuda=_run_top1_cuda,
    triton=_run_top1_triton,
    cpu=_run_top1_cpu,
    torch_ref=_run_top1_torch,
)


# --------------------------------------------------------------------------- public ops


def plan_vote_histogram(
    index, labels, num_inputs, num_classes, *, weights=None, dtype: torch.dtype = torch.int64
) -> AggregatePlan:
    """Validate shapes, dtypes and devices of a :func:`vote_histogram` call."""
    num_inputs = check_int("num_inputs", num_inputs, 0)
    num_classes = check_int("num_classes", num_classes, 1)
    index = _check_ints("index", index, None, None)
    labels = _check_ints("labels", labels, index.shape[0], index.device)
    if dtype not in (torch.int32, torch.int64):
        raise TypeError(f"dtype must be torch.int32 or torch.int64 for counts, got {dtype}")
    if weights is not None:
        weights = _check_floats("weights", weights, (index.shape[0],), index.device)
    if dtype == torch.int32 and index.shape[0] >= 2**31:
        raise ValueError(
            "more than 2**31 - 1 answers could overflow int32 counts; use dtype=torch.int64"
        )
    if num_inputs * num_classes >= 2**62:
        raise ValueError(f"num_inputs * num_classes = {num_inputs * num_classes} is too large")
    if num_inputs == 0 and index.shape[0]:
        raise ValueError("num_inputs is 0 but there are answers; every answer must name an input")
    mode = "counts" if weights is None else "weighted"
    return AggregatePlan(mode, index, labels, weights, num_inputs, num_classes, dtype)


def vote_histogram(
    index: torch.Tensor,
    labels: torch.Tensor,
    num_inputs: int,
    num_classes: int,
    *,
    weights: torch.Tensor | None = None,
    dtype: torch.dtype = torch.int64,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Per-input vote histogram: ``H[n, c] = sum_{i: index_i = n, labels_i = c} w_i``.

    Parameters
    ----------
    index:
        (M,) int32/int64: the private input each answer belongs to, in [0, N).
        Any order; answers grouped by input (sorted index) take a faster path.
    labels:
        (M,) int32/int64 class of each answer, in [0, C).
    num_inputs, num_classes:
        N >= 0 and C >= 1.
    weights:
        Optional (M,) float32/float16/bfloat16 vote weights, finite and >= 0.
    dtype:
        Count dtype without weights: torch.int64 (default) or torch.int32.
    backend:
        "auto" (default or ``$NOISEFORGE_BACKEND``), "torch", "cpu", "cuda", "triton".

    Returns
    -------
    (N, C) counts of ``dtype``, or float32 weighted sums. Sums follow the
    fixed-point contract (module docstring): bit-identical on every backend and
    run, with an error below ``M * 2^-(k+1)`` where ``2^(62-k) >= M * max(w)``.

    Raises
    ------
    ValueError
        An index outside [0, N), a label outside [0, C), or a weight that is
        negative, NaN or inf: the message names the first offending position.
        Mismatched lengths or devices.
    TypeError
        Wrong dtypes.
    """
    p = plan_vote_histogram(index, labels, num_inputs, num_classes, weights=weights, dtype=dtype)
    return VOTE_HISTOGRAM.run(p, backend)


def plan_soft_label_sum(index, probs, num_inputs) -> AggregatePlan:
    """Validate a :func:`soft_label_sum` call."""
    num_inputs = check_int("num_inputs", num_inputs, 0)
    index = _check_ints("index", index, None, None)
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2:
        raise ValueError("probs must be a (M, C) tensor of class probabilities")
    if probs.shape[1] < 1:
        raise ValueError("probs must have at least one class column")
    probs = _check_floats("probs", probs, (index.shape[0], probs.shape[1]), index.device)
    if num_inputs == 0 and index.shape[0]:
        raise ValueError("num_inputs is 0 but there are answers; every answer must name an input")
    return AggregatePlan("soft", index, None, probs, num_inputs, probs.shape[1], torch.int64)


_plan_soft = plan_soft_label_sum


def soft_label_sum(
    index: torch.Tensor,
    probs: torch.Tensor,
    num_inputs: int,
    *,
    mean: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Sum (or mean) of each input's answer probabilities: ``S[n] = sum_{i: index_i = n} probs_i``.

    ``index`` (M,) int32/int64 in [0, N); ``probs`` (M, C) float32/float16/bfloat16,
    finite and >= 0 (rows need not sum to 1). Returns (N, C) float32 under the
    fixed-point contract (bit-identical on every backend). With ``mean=True``
    each row is divided (float32) by its number of answers; inputs with no
    answers get a row of zeros. Raises ValueError naming the first offending
    position for an index outside [0, N) or a bad probability.
    """
    p = plan_soft_label_sum(index, probs, num_inputs)
    sums = VOTE_HISTOGRAM.run(p, backend)
    if not mean:
        return sums
    counts = torch.zeros(num_inputs, dtype=torch.int64, device=index.device)
    counts.index_add_(0, index.to(torch.int64), torch.ones_like(index, dtype=torch.int64))
    return sums / counts.clamp(min=1).to(torch.float32).unsqueeze(1)


class Top1(NamedTuple):
    """Winner of each histogram row."""

    label: torch.Tensor  # (N,) int64, the class with most votes; -1 for a row with no votes
    top: torch.Tensor  # (N,) the winner's votes (the histogram's dtype)
    share: torch.Tensor  # (N,) float32, top / row total (0 for an empty row)
    margin: torch.Tensor  # (N,) float32, (top - runner-up) / row total (0 for an empty row)


def aggregate_top1(hist: torch.Tensor) -> Top1:
    """Label with the most votes per row, its vote share and the margin to the runner-up.

    ``hist``: (N, C) counts or sums (any real dtype, values >= 0). Ties go to the
    lowest class id. Rows that received no votes (total 0) get label -1, share
    and margin 0. A cheap row reduction: the same torch code runs on every device.
    """
    if not isinstance(hist, torch.Tensor) or hist.dim() != 2 or hist.shape[1] < 1:
        raise ValueError("hist must be an (N, C) tensor with C >= 1, e.g. from vote_histogram")
    if hist.is_floating_point() and not bool(torch.isfinite(hist).all()):
        raise ValueError("hist contains NaN or inf")
    h = hist
    top, label = h.max(dim=1)  # max returns the first maximal index: ties go to the lowest id
    if h.shape[1] > 1:
        second = h.topk(2, dim=1).values[:, 1]
    else:
        second = torch.zeros_like(top)
    total = h.sum(dim=1).to(torch.float32)
    empty = total <= 0
    safe = torch.where(empty, torch.ones_like(total), total)
    share = torch.where(empty, torch.zeros_like(total), top.to(torch.float32) / safe)
    margin = torch.where(empty, torch.zeros_like(total), (top - second).to(torch.float32) / safe)
    label = torch.where(empty, torch.full_like(label, -1), label)
    return Top1(label, top, share, margin)


def plan_aggregate_labels(
    index: torch.Tensor,
    num_inputs: int,
    *,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    weights: torch.Tensor | None = None,
    probs: torch.Tensor | None = None,
) -> AggregatePlan:
    """Validate an :func:`aggregate_labels` call (hard answers or soft answers)."""
    if probs is not None:
        if labels is not None or weights is not None or num_classes is not None:
            raise ValueError(
                "give either probs (soft answers) or labels/num_classes/weights (hard answers)"
            )
        return plan_soft_label_sum(index, probs, num_inputs)
    if labels is None or num_classes is None:
        raise ValueError("give labels and num_classes (hard answers), or probs (soft answers)")
    return plan_vote_histogram(index, labels, num_inputs, num_classes, weights=weights)


def aggregate_labels(
    index: torch.Tensor,
    num_inputs: int,
    *,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    weights: torch.Tensor | None = None,
    probs: torch.Tensor | None = None,
    backend: str | None = None,
) -> Top1:
    r"""Each input's winning label, without the (N, C) table: the fused form of
    ``aggregate_top1(vote_histogram(...))`` / ``aggregate_top1(soft_label_sum(...))``.

    Give either hard answers -- ``labels`` (M,) with ``num_classes``, optionally
    ``weights`` (M,) -- or soft answers ``probs`` (M, C). Inputs are validated as
    by :func:`vote_histogram` / :func:`soft_label_sum` (the same errors).

    Returns a :class:`Top1`: ``label`` (N,) int64 (the lowest class id among the
    largest values; -1 for an input without votes), ``top`` the winner's value
    (int64 counts, or float32 sums), ``share`` and ``margin`` float32 fractions
    of the row total. Counts give exactly ``aggregate_top1(vote_histogram(...))``.
    For sums, label and top are those of the float32 table too, but the total
    is the row's exact fixed-point total rounded (see
    ``noiseforge.reference.aggregate.top1_from_sums``) rather than a float32 sum
    of rounded cells, so share and margin may differ from ``aggregate_top1``'s
    in the last bits; every backend returns the same bits.

    The ``cpu`` backend never builds the table: each thread reduces a few rows
    at a time (memory O(M + threads x cache)), which is what lets C reach the
    thousands with N in the millions; from 512 classes on, hard answers are
    reduced over the cells they touch only (time O(M), not O(N x C)). The
    ``cuda``, ``triton`` and ``torch`` backends build the int64 table on the
    device and reduce it.
    """
    p = plan_aggregate_labels(
        index, num_inputs, labels=labels, num_classes=num_classes, weights=weights, probs=probs
    )
    return AGGREGATE_LABELS.run(p, backend)
