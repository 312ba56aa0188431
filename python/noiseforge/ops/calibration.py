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

import numpy as np

MAX_LEVELS = 4097


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
