"""Noise calibration: from (epsilon, delta, domain) to per-feature noise scales.

Every input is clipped to its domain ``[lower_j, upper_j]`` before noise is
added; clipping is what bounds the sensitivity ``Delta_j = upper_j - lower_j``.

``unit="feature"``: each feature is an independent eps-LDP release.
    Laplace  ``b_j = Delta_j / eps``;
    Gaussian ``sigma_j`` = the analytic Gaussian mechanism (Balle & Wang, ICML
    2018) for ``(eps, delta)`` and sensitivity ``Delta_j``.
    A record of D features then composes to ``(D * eps)``-LDP (Laplace) or
    ``(D * eps, D * delta)``-LDP (Gaussian) by basic composition.
``unit="record"``: the whole record is one eps-LDP release.
    Laplace  ``b = sum_j Delta_j / eps`` (L1 sensitivity) on every feature;
    Gaussian ``sigma`` from the L2 sensitivity ``sqrt(sum_j Delta_j^2)``.

Discrete Laplace (the hardened mode): inputs are quantised to ``levels`` grid
points per feature and the integer noise is two-sided geometric,
``P(z) ~ alpha^|z|`` with ``alpha = exp(-eps / (levels - 1))`` per feature (or
``exp(-eps / (D * (levels - 1)))`` per record), sampled by integer comparisons
against a 64-bit threshold table, and clamped to the grid (the truncated
geometric mechanism of Ghosh, Roughgarden & Sundararajan, 2009). Because the
table is finite-precision, :func:`realized_epsilon` computes the privacy loss of
the exact sampled distribution.
"""

from __future__ import annotations

import collections
import fractions
import functools
import itertools
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch

from noiseforge._common.validation import is_int

MAX_LEVELS = 4097
#: the mechanisms :func:`calibrate_noise` calibrates (their types: :mod:`noiseforge.ops.noise_spec`)
MECHANISM_NAMES = ("laplace", "gaussian", "discrete_laplace")
#: what one epsilon covers: one feature, or the whole record
UNITS = ("feature", "record")
#: how far the realized discrete-Laplace loss may exceed the epsilon asked for (the
#: 64-bit tables' rounding); beyond it the epsilon is refused as too small
REALIZED_SLACK = 0.01


def laplace_scale(epsilon: float, sensitivity: float) -> float:
    """Laplace scale ``b = sensitivity / epsilon`` for eps-DP."""
    return sensitivity / epsilon


def _phi(t: float) -> float:
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def _gaussian_delta(sigma: float, epsilon: float, sensitivity: float) -> float:
    # Balle & Wang (2018), Theorem 8: the exact delta of N(0, sigma^2) at eps.
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    tail = _phi(-a - b)
    second = math.exp(epsilon + math.log(tail)) if tail > 0 else 0.0
    return _phi(a - b) - second


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest sigma with ``delta(sigma) <= delta`` (analytic Gaussian mechanism).

    Balle & Wang, "Improving the Gaussian Mechanism for Differential Privacy:
    Analytical Calibration and Optimal Denoising", ICML 2018. Bisection on
    ``log sigma`` to a relative precision of 1e-12; valid for every eps > 0
    (unlike the classical ``sqrt(2 ln(1.25/delta)) * Delta / eps`` bound, which
    needs eps < 1).
    """
    lo, hi = 1e-12 * sensitivity, sensitivity
    while _gaussian_delta(hi, epsilon, sensitivity) > delta:
        hi *= 2.0
        if hi > 1e12 * sensitivity:
            # beyond this the delta formula cancels to 0 in float64 and would stop too early
            raise ValueError(
                f"epsilon={epsilon}, delta={delta} need a Gaussian sigma above 1e12 times the "
                "sensitivity; such noise destroys the data: raise epsilon or delta"
            )
    while _gaussian_delta(lo, epsilon, sensitivity) <= delta:
        lo /= 2.0
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if _gaussian_delta(mid, epsilon, sensitivity) > delta:
            lo = mid
        else:
            hi = mid
        if hi / lo - 1.0 < 1e-12:
            break
    return hi


def geometric_alpha(epsilon: float, grid_sensitivity: int) -> float:
    return math.exp(-epsilon / grid_sensitivity)


@functools.lru_cache(maxsize=64)
def geometric_table(alpha: float, levels: int) -> np.ndarray:
    """Thresholds ``T[m-1] = round(2^64 * P(|Z| >= m))``, m = 1 .. levels-1.

    ``Z`` is two-sided geometric: ``P(Z = z) = (1 - alpha) / (1 + alpha) * alpha^|z|``,
    so ``P(|Z| >= m) = 2 alpha^m / (1 + alpha)``. Magnitudes of ``levels - 1``
    or more all clamp to the same grid end, so the table stops there.
    Returned as uint64 (non-increasing).
    """
    m = np.arange(1, levels, dtype=np.float64)
    tail = 2.0 * np.power(alpha, m) / (1.0 + alpha)
    table = np.floor(tail * 2.0**64 + 0.5)
    table = np.minimum(table, 2.0**64 - 1.0)
    out = np.array([int(v) for v in table], dtype=np.uint64)
    # keep it non-increasing after rounding
    return np.minimum.accumulate(out)


@functools.lru_cache(maxsize=64)
def realized_epsilon(alpha: float, levels: int) -> float:
    """Exact worst-case privacy loss of one clamped discrete-Laplace feature, rounded up.

    Builds the sampled output distribution ``P(y | q)`` for every grid input
    ``q`` from the integer thresholds (probabilities are multiples of 2^-65) and
    returns ``max_{y, q, q'} log P(y | q) / P(y | q')``; ``inf`` when some output
    is unreachable from some input (eps too large for 64-bit tables). The
    probabilities, their ratios and the choice of the worst one are exact integer
    arithmetic (float64 cannot hold 65-bit counts: at tiny epsilon it under-reported
    the loss); only the final logarithm is floating point, and it is rounded up, so
    the value charged is never below the true loss.
    """
    table = [int(v) for v in geometric_table(alpha, levels)]
    L = levels
    # P(M >= m) * 2^64 for m = 0 .. L-1, then P(M = m) * 2^64 with M capped at L-1
    ge = [1 << 64, *table]
    pm = [ge[m] - ge[m + 1] for m in range(L - 1)] + [ge[L - 1]]
    # P(Z = z) * 2^65 for z = -(L-1) .. (L-1) (index z + L-1): a sign on top of M
    pz = [*pm[:0:-1], 2 * pm[0], *pm[1:]]
    cdf = list(itertools.accumulate(pz))
    total = cdf[-1]
    worst = (1, 1)  # (largest, smallest) probability of the worst output so far
    for y in (0, L - 1):  # the clamped ends: P(Z <= -q) and P(Z >= L-1-q), monotone in q
        if y == 0:
            p = [cdf[(L - 1) - q] for q in range(L)]
        else:
            p = [total - cdf[2 * L - 3 - q] for q in range(L)]
        hi, lo = max(p), min(p)
        if lo <= 0:
            return math.inf
        if hi * worst[1] > worst[0] * lo:
            worst = (hi, lo)
    # interior outputs 0 < y < L-1: P(y | q) = P(Z = y - q), q = 0 .. L-1, i.e. the
    # window pz[y .. y+L-1]; its max and min by monotone queues (O(L) for all windows)
    hi_q: collections.deque[int] = collections.deque()
    lo_q: collections.deque[int] = collections.deque()
    for i, v in enumerate(pz[: 2 * L - 2]):
        while hi_q and pz[hi_q[-1]] <= v:
            hi_q.pop()
        hi_q.append(i)
        while lo_q and pz[lo_q[-1]] >= v:
            lo_q.pop()
        lo_q.append(i)
        y = i - (L - 1)  # the window ending at i starts at y
        if y < 1:
            continue
        while hi_q[0] < y:
            hi_q.popleft()
        while lo_q[0] < y:
            lo_q.popleft()
        hi, lo = pz[hi_q[0]], pz[lo_q[0]]
        if lo <= 0:
            return math.inf
        if hi * worst[1] > worst[0] * lo:
            worst = (hi, lo)
    hi, lo = worst
    if hi == lo:
        return 0.0
    # log(hi / lo) = log1p((hi - lo) / lo): the ratio correctly rounded, then two ulps up
    # cover float's rounding of the ratio and log1p's error
    loss = math.log1p(float(fractions.Fraction(hi - lo, lo)))
    return math.nextafter(math.nextafter(loss, math.inf), math.inf)


@dataclass(frozen=True)
class NoiseCalibration:
    """What a call of :func:`noiseforge.ops.ldp_noise` guarantees.

    ``scale`` is per feature: the Laplace ``b``, the Gaussian ``sigma`` or, for
    discrete Laplace, the grid step. ``epsilon_per_feature`` and
    ``epsilon_per_record`` (``delta_per_record``) are the guarantee of **one**
    noisy copy of a record; ``epsilon_total`` / ``delta_total`` cover all
    ``copies`` of it together (basic composition: K copies cost K times).
    """

    mechanism: str
    unit: str
    epsilon: float
    delta: float
    features: int
    scale: np.ndarray
    epsilon_per_feature: float
    epsilon_per_record: float
    delta_per_record: float
    copies: int = 1
    levels: int | None = None
    alpha: float | None = None

    @property
    def epsilon_total(self) -> float:
        return self.epsilon_per_record * self.copies

    @property
    def delta_total(self) -> float:
        return min(1.0, self.delta_per_record * self.copies)

    @property
    def guarantee(self) -> str:
        if self.mechanism == "gaussian":
            head = f"({self.epsilon_total:.6g}, {self.delta_total:.3g})-LDP per record"
        else:
            head = f"{self.epsilon_total:.6g}-LDP per record"
        copies = (
            f"{self.copies} copies of {self.epsilon_per_record:.6g} each"
            if self.copies > 1
            else "one copy"
        )
        per_feature = (
            f"{self.epsilon_per_feature:.6g} per feature, composed over {self.features} features"
            if self.unit == "feature"
            else f"calibrated on the whole record of {self.features} features"
        )
        caveat = {
            "laplace": "for the ideal real-valued Laplace mechanism; float32 sampling is "
            "open to Mironov's (2012) attack and draws stop at about 16.6 scales, so use "
            "'discrete_laplace' where that matters",
            "gaussian": "for the ideal real-valued Gaussian mechanism (analytic calibration); "
            "float32 sampling is not hardened and draws stop at about 5.3 sigma, which adds "
            "up to about 1e-7 to delta",
            "discrete_laplace": "exact for the sampled integer distribution (realized epsilon "
            "computed from the 64-bit tables); outputs lie on the quantisation grid",
        }[self.mechanism]
        return f"{head} ({copies}; {per_feature}); {caveat}"


# --------------------------------------------------------------------------- argument checks


_F32_MAX = float(np.finfo(np.float32).max)


def _check_number(name: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float64
        raise ValueError(
            f"{name} must be a finite number > 0, got an integer of {int(value).bit_length()} "
            "bits (beyond float64)"
        ) from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _bound_array(name: str, value: Any) -> np.ndarray:
    """A bound (number, array or tensor) as a numpy array of its own shape; refuses
    non-numeric values (bfloat16 and float16 tensors become float32, exactly)."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_floating_point() and t.dtype != torch.float64:
            t = t.float()  # numpy has no bfloat16; float16 -> float32 is exact
        arr = t.cpu().numpy()
    else:
        arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"{name} must be a number or a numeric array within float32's range, got dtype "
            f"{arr.dtype}"
        )
    return arr


def _check_bound_values(name: str, wide: np.ndarray) -> None:
    """Every value of a flat float64 bound finite and within float32 (index = feature)."""
    bad = np.flatnonzero(~np.isfinite(wide))
    if bad.size:
        raise ValueError(f"{name} must be finite; feature {bad[0]} is {wide[bad[0]]}")
    bad = np.flatnonzero(np.abs(wide) > _F32_MAX)
    if bad.size:
        raise ValueError(
            f"{name} must lie within float32's range (+-{_F32_MAX:.4g}), the precision of the "
            f"op; feature {bad[0]} is {wide[bad[0]]:.4g}: rescale the data"
        )


def _feature_vector(name: str, value: Any, feature_shape: tuple[int, ...], d: int) -> np.ndarray:
    """A bound broadcast to the feature shape of x, as (D,) float32, checked."""
    arr = _bound_array(name, value)
    try:
        arr = np.broadcast_to(arr, feature_shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {arr.shape}, which does not broadcast to the feature shape "
            f"{feature_shape} of x; give a scalar or an array of that shape"
        ) from None
    wide = np.asarray(arr, dtype=np.float64).reshape(d)
    _check_bound_values(name, wide)
    return wide.astype(np.float32)


def _check_epsilon(epsilon: Any) -> float:
    """epsilon as a float: a finite real number > 0."""
    return _check_number("epsilon", epsilon)


def _check_gaussian_delta(delta: Any) -> float:
    """The Gaussian mechanism's delta as a float in (0, 1)."""
    if delta is None:
        raise ValueError("the Gaussian mechanism needs delta in (0, 1), e.g. delta=1e-5")
    delta = _check_number("delta", delta)
    if not delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return delta


def _check_pure_delta(mechanism: str, delta: Any) -> None:
    """A pure eps-LDP mechanism takes no delta (None or 0 are accepted, as no delta)."""
    if delta not in (None, 0, 0.0):
        raise ValueError(f"delta applies to mechanism='gaussian' only; {mechanism} is pure eps-LDP")


def _check_levels(levels: Any) -> int:
    """discrete_laplace's grid points per feature as an int in [2, MAX_LEVELS]."""
    if not is_int(levels) or not 2 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be an int in [2, {MAX_LEVELS}], got {levels!r}")
    return int(levels)


def _check_mechanism_name(mechanism: Any) -> str:
    if not isinstance(mechanism, str) or mechanism not in MECHANISM_NAMES:
        raise ValueError(f"mechanism must be one of {sorted(MECHANISM_NAMES)}, got {mechanism!r}")
    return mechanism


def _check_unit(unit: Any) -> str:
    if not isinstance(unit, str) or unit not in UNITS:
        raise ValueError(f"unit must be 'feature' or 'record', got {unit!r}")
    return unit


# --------------------------------------------------------------------------- calibration


def _bounds_vector(name: str, value: Any) -> np.ndarray:
    """(D,) float32 bounds for :func:`calibrate_noise` (any shape, flattened)."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    d = int(arr.size)
    return _feature_vector(name, arr.reshape(d) if arr.dtype.kind in "fiu" else arr, (d,), d)


def _check_grid(lower: np.ndarray, upper: np.ndarray, levels: int) -> None:
    """discrete_laplace computes ``(x - lower) / step`` and ``lower + q * step`` in float32
    (step = the grid step): the width must be finite there and the step a normal float32."""
    with np.errstate(over="ignore"):
        width32 = upper - lower  # float32, as the kernels compute it
    bad = np.flatnonzero(~np.isfinite(width32))
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"discrete_laplace: the domain [{lower[j]:.4g}, {upper[j]:.4g}] of feature {j} is "
            "wider than float32's range, in which the grid is computed; rescale the data"
        )
    step = (upper.astype(np.float64) - lower.astype(np.float64)) / (levels - 1)
    bad = np.flatnonzero(step.astype(np.float32) < np.finfo(np.float32).tiny)
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"discrete_laplace: the grid step (upper - lower) / (levels - 1) = {step[j]:.3g} "
            f"of feature {j} is below float32's normal range (~1.2e-38); widen the domain "
            "(rescale the data) or use fewer levels"
        )


def _round_up_f32(values: np.ndarray) -> np.ndarray:
    """float64 -> float32, rounding up, so that noise is never smaller than calibrated."""
    out = values.astype(np.float32)
    low = out.astype(np.float64) < values
    out[low] = np.nextafter(out[low], np.float32(np.inf))
    return out


def calibrate_noise(
    *,
    mechanism: str,
    epsilon: float,
    delta: float | None,
    lower: np.ndarray,
    upper: np.ndarray,
    unit: str = "feature",
    levels: int | None = None,
    copies: int = 1,
) -> NoiseCalibration:
    """Per-feature noise scales and the guarantee for float32 (D,) domain bounds.

    The formulas are this module's (see its docstring); the mechanism types of
    :mod:`noiseforge.ops.noise_spec` calibrate through this function. ``copies`` (K) enters
    the guarantee only: every copy is a fresh release of the same record, so a
    record's K copies together cost K times the budget of one. Raises ValueError
    on an unknown mechanism or unit, a bad epsilon/delta/levels, lower >= upper,
    bounds beyond float32, a noise scale beyond float32, or (discrete_laplace) an
    epsilon that the 64-bit sampling tables cannot realise (too small: the noise
    is flatter than they resolve; too large: some outputs become unreachable), a
    domain wider than float32 or a grid step below float32's normal range.
    """
    lower = _bounds_vector("lower", lower)
    upper = _bounds_vector("upper", upper)
    if lower.shape != upper.shape:
        raise ValueError(
            f"lower and upper must have one value per feature each; got {lower.size} and "
            f"{upper.size} values"
        )
    _check_mechanism_name(mechanism)
    _check_unit(unit)
    epsilon = _check_epsilon(epsilon)
    if mechanism == "gaussian":
        delta = _check_gaussian_delta(delta)
    else:
        _check_pure_delta(mechanism, delta)
    bad = np.flatnonzero(~(lower < upper))
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"lower must be < upper for every feature; feature {j} has lower={lower[j]} "
            f">= upper={upper[j]}"
        )
    d = lower.size
    width = upper.astype(np.float64) - lower.astype(np.float64)
    feature = unit == "feature"
    extra: dict[str, Any] = {}
    delta_one = 0.0
    if mechanism == "laplace":
        with np.errstate(over="ignore"):  # an infinite scale is refused below
            scale = width / epsilon if feature else np.full(d, width.sum() / epsilon)
        eps_f = epsilon if feature else math.nan
        eps_r = epsilon * d if feature else epsilon
    elif mechanism == "gaussian":
        assert delta is not None
        unit_sigma = analytic_gaussian_sigma(epsilon, delta, 1.0)  # sigma scales with Delta
        if feature:
            scale = width * unit_sigma
            eps_f, eps_r, delta_one = epsilon, epsilon * d, min(1.0, delta * d)
        else:
            scale = np.full(d, math.sqrt(float(np.sum(width**2))) * unit_sigma)
            eps_f, eps_r, delta_one = math.nan, epsilon, delta
    else:  # discrete_laplace
        levels = _check_levels(256 if levels is None else levels)
        _check_grid(lower, upper, levels)
        grid = (levels - 1) * (1 if feature else max(d, 1))  # D = 0: nothing is released
        alpha = geometric_alpha(epsilon, grid)
        too_small = (
            f"epsilon={epsilon} is too small for discrete_laplace with {levels} levels"
            f"{'' if feature else f' over {d} features'}: its noise (alpha = exp(-epsilon / "
            f"{grid}) = {alpha!r}) is flatter than the 64-bit sampling tables resolve, so some "
            "outputs would be unreachable; raise epsilon or use fewer levels"
        )
        # 2 alpha / (1 + alpha) = P(|Z| >= 1) rounding to 1 would overflow the uint64 table
        if not 2.0 * alpha / (1.0 + alpha) < 1.0:
            raise ValueError(too_small)
        per_feature = realized_epsilon(alpha, levels)
        if not math.isfinite(per_feature):
            if geometric_table(alpha, levels)[-1] != 0:  # no threshold reached 0: too flat
                raise ValueError(too_small)
            raise ValueError(
                f"epsilon={epsilon} is too large for discrete_laplace with {levels} levels: the "
                "64-bit sampling tables cannot reach every output; lower epsilon or the levels"
            )
        wanted = epsilon if feature else epsilon / max(d, 1)
        if per_feature > wanted * (1 + REALIZED_SLACK):
            raise ValueError(
                f"epsilon={epsilon} is too small for discrete_laplace with {levels} levels"
                f"{'' if feature else f' over {d} features'}: the 64-bit sampling tables' "
                f"rounding would make the privacy loss {per_feature:.3g} per feature, not the "
                f"{wanted:.3g} asked for; raise epsilon, use fewer levels, or use laplace"
            )
        scale = width / (levels - 1)  # the grid step (privacy does not depend on it)
        eps_f = per_feature if feature else math.nan
        eps_r = math.nextafter(per_feature * d, math.inf) if d > 1 else per_feature * d
        extra = {"levels": levels, "alpha": alpha}
    # Noise draws reach about 17 scales (Laplace) from the input; all of it must stay finite.
    if (
        d
        and not float(np.max(scale)) * 20 + float(np.max(np.abs(np.concatenate([lower, upper]))))
        < _F32_MAX
    ):
        raise ValueError(
            f"the noise scale {float(np.max(scale)):.3g} is too large for float32 (domain width "
            f"/ epsilon); rescale the data to a smaller domain or raise epsilon"
        )
    scale = np.asarray(scale, np.float64)
    # continuous scales round up (never less noise than calibrated); the grid step rounds to nearest
    scale32 = scale.astype(np.float32) if extra else _round_up_f32(scale)
    return NoiseCalibration(
        mechanism,
        unit,
        epsilon,
        delta or 0.0,
        d,
        scale32,
        eps_f,
        eps_r,
        delta_one,
        copies=copies,
        **extra,
    )
