"""Bounded fuzzing of the ops: the native ``cpu`` backend against the ``torch``
reference on random shapes, strides, dtypes and extreme values.

On CPU every op's contract is exact (float results too), so both backends must
return the same bits; bad input must raise the package's own ValueError or
TypeError, with the same type and message on both. Anything else -- another
exception, a NaN/inf output, a clamped value outside its domain, an input that
the op overwrote -- fails. Budgets come from :func:`tests.fuzzing.fuzz_settings`
(fixed seed; ``NOISEFORGE_FUZZ_SCALE=N`` for longer runs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from noiseforge.ops import (
    aggregate_labels,
    knn_topk,
    ldp_noise,
    registry,
    soft_label_sum,
    vote_histogram,
)
from tests.support.backends import assert_close_report
from tests.support.fuzzing import fuzz_settings

pytestmark = pytest.mark.skipif(
    bool(registry.record("ldp_noise", "cpu").available()),
    reason="the native cpu backend is not built",
)

# Values that sit on the edges of float32/float16/bfloat16 and of the ops' domains.
F32_MAX = float(np.finfo(np.float32).max)
EXTREMES = [
    0.0,
    -0.0,
    1e-45,  # the smallest float32 subnormal
    -1.1754943508222875e-38,
    5.960464477539063e-08,  # float16's smallest subnormal
    0.5,
    -1.5,
    255.0,
    256.0,
    65504.0,
    -65520.0,
    3.3895313892515355e38,  # bfloat16's largest
    F32_MAX,
    -F32_MAX,
    1e30,
    -1e20,
]
NON_FINITE = [math.nan, math.inf, -math.inf]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.uint8]


class Outcome:
    """What a call did: its result, or the error it raised (type and message)."""

    def __init__(self, fn) -> None:
        self.result: Any = None
        self.error: tuple[type, str] | None = None
        try:
            self.result = fn()
        except (ValueError, TypeError) as exc:  # the package's clean errors; others fail
            self.error = (type(exc), str(exc))

    def same_as(self, other: Outcome) -> None:
        if self.error or other.error:
            assert self.error == other.error, f"cpu: {self.error!r}\ntorch: {other.error!r}"
            assert self.error is not None and self.error[1], "an error without a message"


def _tensor(draw, shape, dtype, *, allow_nonfinite: bool, scale: float = 4.0) -> torch.Tensor:
    """A tensor of ``shape`` with random strides: a strided window (steps, offsets,
    a permutation, or a stride-0 broadcast) of a larger buffer, filled with random
    values plus a few extremes."""
    ndim = len(shape)
    steps = [draw(st.sampled_from([1, 1, 2, 3])) for _ in range(ndim)]
    offs = [draw(st.integers(0, 2)) for _ in range(ndim)]
    perm = draw(st.permutations(range(ndim))) if ndim > 1 else list(range(ndim))
    broadcast = ndim > 1 and draw(st.integers(0, 9)) == 0
    inner = [shape[p] for p in perm]  # the window's shape before it is permuted back
    if broadcast:
        inner[0] = 1
    base_shape = [
        max(1, (s - 1) * st_ + 1 + o) for s, st_, o in zip(inner, steps, offs, strict=True)
    ]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if dtype == torch.uint8:
        base = torch.randint(0, 256, base_shape, generator=gen, dtype=torch.uint8)
    else:
        base = (torch.rand(base_shape, generator=gen, dtype=torch.float64) - 0.3) * scale
        flat = base.view(-1)
        pool = EXTREMES + (NON_FINITE if allow_nonfinite else [])
        for _ in range(draw(st.integers(0, 3))):
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(pool))
        base = base.to(dtype)  # float16/bfloat16 overflow to inf: a non-finite input
    window = base[
        tuple(
            slice(o, o + (s - 1) * st_ + 1, st_)
            for s, st_, o in zip(inner, steps, offs, strict=True)
        )
    ]
    if broadcast:
        window = window.expand(shape[perm[0]], *window.shape[1:])
    inverse = [perm.index(i) for i in range(ndim)]
    x = window.permute(*inverse)
    assert tuple(x.shape) == tuple(shape)
    return x


# Arguments that must be refused, per parameter (hostile cases draw some of them).
BAD_BOUNDS = [*NON_FINITE, 1e39, -1e300, 10**400, "0", [1.0, 2.0]]
BAD_EPSILON = [0.0, -1.0, *NON_FINITE, 10**400, True, "1"]
EXTREME_EPSILON = [1e-300, 5e-324, 1e-17, 1e-13, 1e-9, 1e-6, 45.0, 60.0, 700.0, 1e308, 2]


@st.composite
def ldp_cases(draw):
    """(x, D, kwargs) of an ldp_noise call. Most cases take legal (often extreme)
    arguments, so both backends run; a quarter are hostile and draw refused values."""
    hostile = draw(st.integers(0, 3)) == 0

    def pick(good, bad):
        """``good`` (a strategy), or in a hostile case sometimes one of ``bad``."""
        if hostile and bad and draw(st.integers(0, 2)) == 0:
            return draw(st.sampled_from(bad))
        return draw(good)

    dtype = draw(st.sampled_from(DTYPES))
    mechanism = pick(
        st.sampled_from(["laplace", "gaussian", "discrete_laplace"]), ["geometric", None]
    )
    n = draw(st.integers(0, 5))
    features = draw(st.lists(st.integers(0, 6), min_size=1, max_size=3))
    x = _tensor(draw, (n, *features), dtype, allow_nonfinite=hostile)
    d = math.prod(features)

    def bound(low: bool):
        kind = pick(st.sampled_from(["usual", "usual", "extreme", "array"]), ["bad"])
        if kind == "usual":
            if dtype == torch.uint8:
                return draw(st.sampled_from([0, 10, 128] if low else [255, 200, 250]))
            return draw(st.sampled_from([-1.0, 0.0, -1e4] if low else [1.0, 2.0, 1e4]))
        if kind == "extreme":
            return draw(st.sampled_from([*EXTREMES, -1e38, 1e38]))
        if kind == "array":
            gen = torch.Generator().manual_seed(draw(st.integers(0, 999)))
            arr = torch.rand(features, generator=gen, dtype=torch.float64)
            return (arr - (1.0 if low else -1.0)).numpy()
        return draw(st.sampled_from(BAD_BOUNDS))

    kwargs: dict[str, Any] = dict(mechanism=mechanism, lower=bound(True), upper=bound(False))
    kwargs["epsilon"] = pick(
        st.one_of(st.floats(1e-3, 40.0), st.floats(0.1, 5.0), st.sampled_from(EXTREME_EPSILON)),
        BAD_EPSILON,
    )
    if mechanism == "gaussian":
        kwargs["delta"] = pick(
            st.sampled_from([1e-5, 1e-5, 1e-300, 5e-324, 0.5, 0.999999]), [0.0, 1.0, math.nan, None]
        )
    if mechanism == "discrete_laplace":
        kwargs["levels"] = pick(
            st.one_of(st.none(), st.integers(2, 300), st.sampled_from([4096, 4097])),
            [1, 4098, 2**70, True, 2.0],
        )
    kwargs["copies"] = pick(st.integers(1, 3), [0, -1, 2**62, True])
    kwargs["unit"] = pick(st.sampled_from(["feature", "feature", "record"]), ["bogus", 1])
    kwargs["clamp"] = pick(st.sampled_from([True, True, False]), ["no", None])
    if draw(st.integers(0, 4)) == 0:
        keys = torch.randint(-(2**63), 2**63 - 1, (n,), dtype=torch.int64)
        kwargs["keys"] = pick(st.just(keys), [keys[:-1], keys.to(torch.int32), "keys"])
        kwargs["offset"] = pick(st.sampled_from([None, 0, 7, 2**62]), [-1, 2**63])
    else:
        kwargs["seed"] = pick(st.integers(0, 2**63 - 1), [-1, 2**63])
        kwargs["offset"] = pick(st.integers(0, 2**40), [2**63 - 1, -1, 1.5])
    return x, d, kwargs


def _unchanged(x: torch.Tensor, before: torch.Tensor) -> None:
    torch.testing.assert_close(
        x, before, rtol=0, atol=0, equal_nan=True, msg="the op changed its input"
    )


def _in_domain(y: torch.Tensor, kwargs: dict, d: int) -> None:
    """Clamped outputs lie within [lower, upper] as rounded to the output dtype."""
    if not (kwargs["clamp"] is True or kwargs["mechanism"] == "discrete_laplace") or not y.numel():
        return
    shape = y.shape[2:]
    lo = torch.tensor(np.broadcast_to(np.asarray(kwargs["lower"], np.float32), shape).copy())
    hi = torch.tensor(np.broadcast_to(np.asarray(kwargs["upper"], np.float32), shape).copy())
    lo, hi = lo.to(y.dtype).double(), hi.to(y.dtype).double()
    if kwargs["mechanism"] == "discrete_laplace":
        # the grid's top point, lower + (levels - 1) * step with a float32 step, may lie a
        # few float32 ulps above upper (the kernels do not clamp it to upper)
        slack = 4 * 2.0**-23 * torch.maximum(lo.abs(), hi.abs())
        lo, hi = lo - slack, hi + slack
    v = y.double()
    assert bool(((v >= lo) & (v <= hi)).all()), "a clamped output left its domain"


@fuzz_settings(600)
@given(case=ldp_cases())
def test_fuzz_ldp_noise_cpu_equals_reference(case):
    x, d, kwargs = case
    before = x.clone()
    cpu = Outcome(lambda: ldp_noise(x, backend="cpu", **kwargs))
    ref = Outcome(lambda: ldp_noise(x, backend="torch", **kwargs))
    cpu.same_as(ref)
    _unchanged(x, before)
    event("refused" if cpu.error else "ran")
    if cpu.error is None:
        got, want = cpu.result, ref.result
        assert_close_report(got, want, 0.0, 0.0)
        if got.is_floating_point():
            assert bool(torch.isfinite(got).all()), "an output is NaN or inf"
        _in_domain(got, kwargs, d)


@st.composite
def overlap_cases(draw):
    """x and out as views of one buffer, at random offsets and strides."""
    elements = draw(st.integers(1, 400))
    n = draw(st.integers(1, 6))
    dim = draw(st.integers(1, 6))
    copies = draw(st.integers(1, 2))
    x_stride = (draw(st.integers(dim, 3 * dim)), draw(st.sampled_from([1, 1, 2])))
    x_offset = draw(st.integers(0, elements))
    out_offset = draw(st.integers(0, elements))
    layout = draw(st.sampled_from(["same-storage", "two-numpy-views", "separate"]))
    return elements, n, dim, copies, x_stride, x_offset, out_offset, layout


@fuzz_settings(150)
@given(case=overlap_cases())
def test_fuzz_out_overlapping_x_is_refused(case):
    """``out`` sharing any byte of x's span is refused (the same on both backends);
    an accepted ``out`` never changes x, and both backends write the same values."""
    elements, n, dim, copies, (rs, cs), x_off, out_off, layout = case
    x_last = x_off + (n - 1) * rs + (dim - 1) * cs  # last element x reads
    out_count = n * copies * dim
    size = max(x_last, out_off + out_count) + 1
    arr = np.random.default_rng(elements).random(size, dtype=np.float32)
    buf = torch.from_numpy(arr)
    x = buf.as_strided((n, dim), (rs, cs), x_off)
    if layout == "separate":
        out = torch.empty(n, copies, dim)
        overlap = False
    else:
        # the second view: of the same storage, or of the same memory through numpy
        other = buf if layout == "same-storage" else torch.from_numpy(arr[out_off:])
        start = out_off if layout == "same-storage" else 0
        out = other.as_strided((n, copies, dim), (copies * dim, dim, 1), start)
        x_bytes = {x_off + i * rs + j * cs for i in range(n) for j in range(dim)}
        span = range(min(x_bytes), max(x_bytes) + 1)  # the op refuses the whole span
        overlap = bool(set(range(out_off, out_off + out_count)) & set(span))
    before = x.clone()
    args = dict(epsilon=1.0, lower=0.0, upper=1.0, copies=copies, seed=3, offset=0)
    results = []
    for backend in ("cpu", "torch"):
        outcome = Outcome(lambda b=backend: ldp_noise(x, backend=b, out=out, **args))
        results.append(outcome)
        _unchanged(x, before)
        if overlap:
            assert outcome.error is not None and "out overlaps x" in outcome.error[1]
        else:
            assert outcome.error is None, outcome.error
            results[-1].result = outcome.result.clone()
    results[0].same_as(results[1])
    if not overlap:
        assert torch.equal(results[0].result, results[1].result)


# --------------------------------------------------------------------------- aggregation


@st.composite
def vote_cases(draw):
    m = draw(st.integers(0, 60))
    n = draw(st.integers(0, 12))
    c = draw(st.integers(1, 9))
    int_dtype = draw(st.sampled_from([torch.int64, torch.int32]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    step = draw(st.sampled_from([1, 1, 2]))
    index = torch.randint(0, max(n, 1), (m * step,), generator=gen)[::step].to(int_dtype)
    labels = torch.randint(0, c, (m * step,), generator=gen)[::step].to(int_dtype)
    if m and draw(st.integers(0, 5)) == 0:  # an out-of-range index or label
        bad = draw(st.sampled_from([-1, n, c, 2**31 - 1]))
        target = draw(st.sampled_from(["index", "labels"]))
        (index if target == "index" else labels)[draw(st.integers(0, m - 1))] = bad
    wdtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    weights = torch.rand(m, generator=gen, dtype=torch.float64)
    probs = torch.rand(m, c, generator=gen, dtype=torch.float64)
    pool = [0.0, 1e-45, 1e-30, 1.0, 65504.0, 1e30, F32_MAX, -0.0]
    if draw(st.integers(0, 5)) == 0:
        pool += [-1.0, *NON_FINITE]
    for t in (weights, probs):
        flat = t.view(-1)
        for _ in range(draw(st.integers(0, 3)) if flat.numel() else 0):
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(pool))
    weights, probs = weights.to(wdtype), probs.to(wdtype)
    if draw(st.booleans()):
        probs = probs.t().contiguous().t()  # column-major
    use_weights = draw(st.booleans())
    count_dtype = draw(st.sampled_from([torch.int64, torch.int32]))
    return index, labels, weights if use_weights else None, probs, n, c, count_dtype


@fuzz_settings(150)
@given(case=vote_cases())
def test_fuzz_aggregation_cpu_equals_reference(case):
    index, labels, weights, probs, n, c, count_dtype = case
    calls = [
        lambda b: vote_histogram(
            index, labels, n, c, weights=weights, dtype=count_dtype, backend=b
        ),
        lambda b: soft_label_sum(index, probs, n, backend=b),
        lambda b: soft_label_sum(index, probs, n, mean=True, backend=b),
        lambda b: tuple(
            aggregate_labels(index, n, labels=labels, num_classes=c, weights=weights, backend=b)
        ),
        lambda b: tuple(aggregate_labels(index, n, probs=probs, backend=b)),
    ]
    for call in calls:
        cpu = Outcome(lambda c=call: c("cpu"))
        ref = Outcome(lambda c=call: c("torch"))
        cpu.same_as(ref)
        event("refused" if cpu.error else "ran")
        if cpu.error is None:
            got = cpu.result if isinstance(cpu.result, tuple) else (cpu.result,)
            want = ref.result if isinstance(ref.result, tuple) else (ref.result,)
            for a, b in zip(got, want, strict=True):
                assert_close_report(a, b, 0.0, 0.0)  # exact: counts and fixed-point sums


# --------------------------------------------------------------------------- exact top-k


@st.composite
def knn_cases(draw):
    nq = draw(st.integers(0, 5))
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 9))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([1.0, 1e-20, 1e18, 1e30]))
    queries = torch.randn(nq, d, generator=gen) * scale
    corpus = torch.randn(n, d, generator=gen) * scale
    if draw(st.booleans()):  # ties: repeated corpus rows
        corpus[n // 2 :] = corpus[: n - n // 2].clone()
    pool = EXTREMES + (NON_FINITE if draw(st.integers(0, 9)) == 0 else [])
    for t in (queries, corpus):
        flat = t.view(-1)
        for _ in range(draw(st.integers(0, 3)) if flat.numel() else 0):
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(pool))
    if draw(st.booleans()) and d > 1:
        corpus = torch.cat([corpus, corpus], dim=1)[:, ::2]  # strided view
    k = draw(st.one_of(st.integers(1, n), st.sampled_from([0, n + 1, True])))
    metric = draw(st.sampled_from(["cosine", "ip", "l2"]))
    exclude = None
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 999)))
        exclude = [rng.choice(n, size=rng.integers(0, n + 1), replace=False) for _ in range(nq)]
    return queries, corpus, k, metric, exclude


@fuzz_settings(150)
@given(case=knn_cases())
def test_fuzz_knn_topk_cpu_equals_reference(case):
    queries, corpus, k, metric, exclude = case
    cpu = Outcome(
        lambda: knn_topk(queries, corpus, k, metric=metric, exclude=exclude, backend="cpu")
    )
    ref = Outcome(
        lambda: knn_topk(queries, corpus, k, metric=metric, exclude=exclude, backend="torch")
    )
    cpu.same_as(ref)
    event("refused" if cpu.error else "ran")
    if cpu.error is None:
        assert torch.equal(cpu.result[0], ref.result[0]), "ids differ"
        assert_close_report(cpu.result[1], ref.result[1], 0.0, 0.0)
