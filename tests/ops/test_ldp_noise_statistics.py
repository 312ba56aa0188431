"""Statistical checks of the noise: the draws follow the calibrated
distributions, and the empirical privacy loss between the two most distant
neighbouring inputs stays within e^eps up to sampling error. Every check also
runs against a deliberately wrong setting, which it must reject, so that a
check that cannot fail would be noticed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from noiseforge.ops import calibrate_noise, ldp_noise
from noiseforge.ops.calibration import (
    _gaussian_delta,
    analytic_gaussian_sigma,
    geometric_alpha,
    realized_epsilon,
)

BACKENDS = ["torch", "cpu"]


def _noise(mechanism, epsilon, n, backend, seed, **kw):
    x = torch.full((n // 100, 100), 0.5)
    y = ldp_noise(
        x,
        epsilon=epsilon,
        lower=0.0,
        upper=1.0,
        mechanism=mechanism,
        clamp=False,
        seed=seed,
        offset=0,
        backend=backend,
        **kw,
    )
    return (y.double() - 0.5).reshape(-1).numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_laplace_noise_has_the_calibrated_scale(backend):
    eps = 0.8
    b = 1.0 / eps
    noise = _noise("laplace", eps, 200_000, backend, seed=101)
    assert stats.kstest(noise, "laplace", args=(0.0, b)).pvalue > 1e-3
    # the same test rejects a 5 % wrong scale
    assert stats.kstest(noise, "laplace", args=(0.0, 1.05 * b)).pvalue < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_noise_has_the_analytic_scale(backend):
    eps, delta = 1.0, 1e-5
    sigma = analytic_gaussian_sigma(eps, delta, 1.0)
    noise = _noise("gaussian", eps, 200_000, backend, seed=202, delta=delta)
    assert stats.kstest(noise, "norm", args=(0.0, sigma)).pvalue > 1e-3
    assert stats.kstest(noise, "norm", args=(0.0, 1.05 * sigma)).pvalue < 1e-6
    # tails: the erfinv transform reaches beyond 4 sigma at the right rate
    frac = np.mean(np.abs(noise) > 4 * sigma)
    assert abs(frac - 2 * stats.norm.sf(4)) < 5 * math.sqrt(2 * stats.norm.sf(4) / noise.size)


def _geometric_pmf_clamped(alpha, levels, q):
    z = np.arange(-(levels - 1), levels)
    pz = (1 - alpha) / (1 + alpha) * alpha ** np.abs(z)
    out = np.zeros(levels)
    np.add.at(out, np.clip(q + z, 0, levels - 1), pz)
    out[0] += (1 - pz.sum()) / 2  # tails beyond +-(levels-1) fold onto the ends
    out[-1] += (1 - pz.sum()) / 2
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_discrete_laplace_follows_the_clamped_geometric(backend):
    eps, q = 5.0, 100
    x = torch.full((2000, 100), q, dtype=torch.uint8)
    y = (
        ldp_noise(
            x,
            epsilon=eps,
            lower=0,
            upper=255,
            mechanism="discrete_laplace",
            seed=303,
            offset=0,
            backend=backend,
        )
        .reshape(-1)
        .numpy()
    )
    counts = np.bincount(y, minlength=256)

    def pvalue(alpha):
        expected = _geometric_pmf_clamped(alpha, 256, q) * y.size
        keep = expected > 20
        obs, exp = counts[keep], expected[keep]
        if expected[~keep].sum() >= 5:  # pool the sparse tails into one bin
            obs = np.append(obs, counts[~keep].sum())
            exp = np.append(exp, expected[~keep].sum())
        else:
            assert counts[~keep].sum() <= 10, "draws far outside the expected range"
        return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue

    alpha = geometric_alpha(eps, 255)
    assert pvalue(alpha) > 1e-3
    assert pvalue(geometric_alpha(1.1 * eps, 255)) < 1e-6


def _max_excess(a, b, edges, eps):
    """Largest (log(p_a / p_b) - eps) over bins, in standard errors of the log ratio."""
    ca, _ = np.histogram(a, edges)
    cb, _ = np.histogram(b, edges)
    keep = (ca >= 200) & (cb >= 200)
    assert keep.sum() >= 3, "too few populated bins for a privacy check"
    ca, cb = ca[keep], cb[keep]
    log_ratio = np.log(ca / a.size) - np.log(cb / b.size)
    se = np.sqrt(1.0 / ca + 1.0 / cb)
    return float(np.max((np.abs(log_ratio) - eps) / se))


def _neighbours(mechanism, eps, n, seed, levels=None):
    # the two most distant neighbouring inputs of one feature: the domain's ends
    kw = {"levels": levels} if levels else {}
    x = torch.tensor([[0.0], [1.0]])
    y = ldp_noise(
        x,
        epsilon=eps,
        lower=0.0,
        upper=1.0,
        mechanism=mechanism,
        copies=n,
        seed=seed,
        offset=0,
        **kw,
    )
    return y[0].reshape(-1).double().numpy(), y[1].reshape(-1).double().numpy()


def test_empirical_privacy_of_clamped_laplace():
    eps = 1.0
    a, b = _neighbours("laplace", eps, 400_000, seed=404)
    # atoms at the clamped ends get their own bins
    edges = np.concatenate([[-0.5, 1e-9], np.linspace(0.05, 0.95, 19), [1 - 1e-9, 1.5]])
    assert _max_excess(a, b, edges, eps) < 4.0
    # the loss is really used: the end bins reach a ratio close to e^eps
    ca0, cb0 = np.mean(a <= 0), np.mean(b <= 0)
    assert math.log(ca0 / cb0) > 0.9 * eps
    # a mechanism with half the noise (2 eps) fails the same check
    a2, b2 = _neighbours("laplace", 2 * eps, 400_000, seed=405)
    assert _max_excess(a2, b2, edges, eps) > 4.0


def test_empirical_privacy_of_discrete_laplace():
    eps, levels = 1.0, 16
    a, b = _neighbours("discrete_laplace", eps, 400_000, seed=505, levels=levels)
    edges = np.linspace(-1 / 30, 1 + 1 / 30, levels + 1)  # one bin per grid point
    assert _max_excess(a, b, edges, eps) < 4.0
    a2, b2 = _neighbours("discrete_laplace", 2 * eps, 400_000, seed=506, levels=levels)
    assert _max_excess(a2, b2, edges, eps) > 4.0


# ------------------------------------------------------------------ calibration


@pytest.mark.parametrize(("eps", "delta"), [(0.1, 1e-5), (1.0, 1e-5), (7.0, 1e-6), (15.0, 1e-9)])
def test_analytic_gaussian_is_the_smallest_sigma_meeting_delta(eps, delta):
    sigma = analytic_gaussian_sigma(eps, delta, 2.0)
    assert _gaussian_delta(sigma, eps, 2.0) <= delta
    assert _gaussian_delta(sigma * (1 - 1e-6), eps, 2.0) > delta
    if eps < 1:  # never worse than the classical bound, which is valid for eps < 1
        assert sigma < math.sqrt(2 * math.log(1.25 / delta)) * 2.0 / eps


@pytest.mark.parametrize("eps", [0.1, 1.0, 7.0, 20.0])
@pytest.mark.parametrize("levels", [2, 16, 256, 4097])
def test_discrete_tables_realize_the_requested_epsilon(eps, levels):
    got = realized_epsilon(geometric_alpha(eps, levels - 1), levels)
    assert abs(got - eps) < 1e-6 * max(1.0, eps)


def test_guarantee_text_states_per_record_composition():
    lo, hi = np.zeros(784, np.float32), np.ones(784, np.float32)
    cal = calibrate_noise(mechanism="laplace", epsilon=7.0, delta=None, lower=lo, upper=hi)
    assert cal.epsilon_per_record == pytest.approx(7.0 * 784)
    assert "5488-LDP per record" in cal.guarantee and "Mironov" in cal.guarantee
    rec = calibrate_noise(
        mechanism="laplace", epsilon=7.0, delta=None, lower=lo, upper=hi, unit="record"
    )
    assert rec.epsilon_per_record == 7.0 and np.allclose(rec.scale, 784 / 7.0)
    g = calibrate_noise(
        mechanism="gaussian", epsilon=1.0, delta=1e-5, lower=lo, upper=hi, unit="record"
    )
    assert np.allclose(g.scale, analytic_gaussian_sigma(1.0, 1e-5, 28.0), rtol=1e-6)


@pytest.mark.parametrize("levels", [2, 5, 16])
@pytest.mark.parametrize("eps", [0.3, 2.0, 1e-9, 1e-13])
def test_realized_epsilon_matches_an_exact_rational_computation(levels, eps):
    """Recompute the privacy loss of the sampled distribution from the integer
    thresholds with exact fractions, independently of realized_epsilon's code."""
    from fractions import Fraction

    from noiseforge.ops.calibration import geometric_table

    alpha = geometric_alpha(eps, levels - 1)
    table = [int(t) for t in geometric_table(alpha, levels)]
    two64 = 1 << 64
    ge = [two64, *table]  # P(M >= m) * 2^64, m = 0 .. levels-1 (M capped at levels-1)
    pm = [Fraction(ge[m] - (ge[m + 1] if m + 1 < len(ge) else 0), two64) for m in range(levels)]

    def p_z(z):  # sign is a fair coin for |z| > 0
        return pm[0] if z == 0 else pm[abs(z)] / 2

    def p_out(y, q):
        zs = range(-(levels - 1), levels)
        return sum((p_z(z) for z in zs if min(max(q + z, 0), levels - 1) == y), Fraction(0))

    ratio = max(
        p_out(y, a) / p_out(y, b)
        for y in range(levels)
        for a in range(levels)
        for b in range(levels)
    )
    worst = math.log1p(float(ratio - 1))  # exact to within float rounding, even at tiny eps
    got = realized_epsilon(alpha, levels)
    # never below the true loss (what the ledger charges), and within a few ulps of it
    assert got >= worst and got == pytest.approx(worst, rel=1e-12, abs=0)
    if eps >= 1e-9:  # below, the 64-bit tables' rounding dominates: ldp_noise refuses it
        assert worst == pytest.approx(eps, rel=1e-3 if eps > 1e-6 else 0.2)


def _record_noise(keys, n, d, eps):
    x = torch.full((n, d), 0.5)
    y = ldp_noise(x, epsilon=eps, lower=0.0, upper=1.0, clamp=False, keys=keys)
    return (y[:, 0].double() - 0.5).numpy()


def _neighbour_correlation(noise):
    return float(np.corrcoef(noise[:-1].reshape(-1), noise[1:].reshape(-1))[0, 1])


def test_release_streams_of_consecutive_records_are_laplace_and_independent():
    """The per-record streams of a release (keys from ReleaseKey.stream_keys over the
    structured ids 0..n-1) give the calibrated Laplace noise, and neighbouring
    records' noise is uncorrelated; keys shared by neighbours are caught."""
    from noiseforge.random import ReleaseKey

    n, d, eps = 4000, 50, 0.8
    records = np.arange(n, dtype=np.int64)
    for key in (ReleaseKey(), ReleaseKey.from_seed(7, "train")):
        keys = torch.from_numpy(key.stream_keys(records, "batch\0b0").view(np.int64))
        noise = _record_noise(keys, n, d, eps)
        assert stats.kstest(noise.reshape(-1), "laplace", args=(0.0, 1 / eps)).pvalue > 1e-3
        assert stats.kstest(noise.reshape(-1), "laplace", args=(0.0, 1.05 / eps)).pvalue < 1e-6
        assert abs(_neighbour_correlation(noise)) < 5 / math.sqrt(noise[1:].size)
    # the control: neighbours sharing a key are perfectly correlated, and caught
    shared = torch.from_numpy((records // 2).astype(np.int64))
    assert _neighbour_correlation(_record_noise(shared, n, d, eps)) > 0.2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_the_four_elements_of_a_counter_are_independent(backend, mechanism):
    """Laplace and Gaussian take four consecutive elements from the four words of
    one Philox counter, and Laplace takes an element's magnitude and sign from
    disjoint bits of one word: the values, their magnitudes and (Laplace) sign vs
    magnitude are uncorrelated, within 5 standard errors. A layout that reused a
    word for two elements is caught by the same statistic."""
    kw = {"delta": 1e-5} if mechanism == "gaussian" else {}
    noise = _noise(mechanism, 1.0, 400_000, backend, seed=404, **kw)
    groups = noise.reshape(-1, 4)  # 100 features per input: counters start at multiples of 4
    limit = 5 / math.sqrt(groups.shape[0])

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1])

    for i in range(4):
        for j in range(i + 1, 4):
            assert abs(corr(groups[:, i], groups[:, j])) < limit
            assert abs(corr(np.abs(groups[:, i]), np.abs(groups[:, j]))) < limit
    if mechanism == "laplace":
        sign = np.sign(noise)
        assert abs(corr(sign, np.abs(noise))) < 5 / math.sqrt(noise.size)
        assert abs(sign.mean()) < 5 / math.sqrt(noise.size)
    # the control: two elements from one word
    assert corr(np.abs(groups[:, 0]), np.abs(groups[:, 0]) + 0.1 * np.abs(groups[:, 1])) > 0.2
