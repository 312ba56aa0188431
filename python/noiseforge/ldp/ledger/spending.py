"""What records have spent: a piecewise-constant function over record ids.

The ledger stores per-record totals as *spans*: disjoint inclusive id ranges
``[lo, hi]`` on which every record has spent the same (epsilon, delta).
Records that never appear have spent nothing. A charge of (eps, delta) on a
record set splits the spans at the set's edges, adds the cost where the set
covers, and merges neighbours that end up equal -- so a million records
charged alike stay one span, and the work per charge is proportional to the
spans it touches, never to the number of records.

Budget arithmetic is conservative, in the manner of OpenDP's rounding: every
total is an upper bound of the exact real sum of the float64 costs charged so
far. A float sum that rounded down is moved up by one ulp (the exact error
comes from Knuth's TwoSum), so the check ``total <= budget`` never admits a
record whose exact spending exceeds its budget -- not even by an ulp, and no
delta at all on a zero delta budget. The price is that charges which add up
to the budget only in decimal (0.7 + 0.2 + 0.1 against 1.0: their float sum
is 3e-17 above 1.0) are refused; budgets that are sums of the charges made
in binary (for example ``k * eps`` with eps a power-of-two fraction, or
``D * eps`` as computed by the same code) are met exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spans:
    """Sorted disjoint spans: (S,) int64 ``lo``, ``hi`` and float64 ``epsilon``, ``delta``."""

    lo: np.ndarray
    hi: np.ndarray
    epsilon: np.ndarray
    delta: np.ndarray

    @classmethod
    def empty(cls) -> Spans:
        z = np.zeros(0, np.int64)
        return cls(z, z.copy(), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.lo)

    def rows(self) -> list[tuple[int, int, float, float]]:
        return list(
            zip(
                self.lo.tolist(),
                self.hi.tolist(),
                self.epsilon.tolist(),
                self.delta.tolist(),
                strict=True,
            )
        )

    def totals_at(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(epsilon, delta, covered) at each int64 id of ``points``: the totals of the
        span holding it, 0 where none does."""
        i, covered = covering(self.lo, self.hi, points)
        where = np.where(covered, i, len(self))  # index S: the padding zero
        return np.append(self.epsilon, 0.0)[where], np.append(self.delta, 0.0)[where], covered

    def lookup(self, record: int) -> tuple[float, float]:
        eps, delta, _ = self.totals_at(np.array([record], np.int64))
        return float(eps[0]), float(delta[0])


def covering(lo: np.ndarray, hi: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted disjoint inclusive ranges ``[lo, hi]``: the index of the range that
    may hold each point (the last with ``lo <= point``) and whether it does."""
    i = np.searchsorted(lo, points, side="right") - 1
    hit = i >= 0
    hit[hit] = hi[i[hit]] >= points[hit]
    return i, hit


def diff(old: Spans, new: Spans) -> tuple[np.ndarray, Spans]:
    """What replacing ``old`` by ``new`` writes: the ``lo`` of old spans that vanish,
    and the new spans that are not already stored as they are (both sorted by lo)."""
    at = np.minimum(np.searchsorted(old.lo, new.lo), max(len(old) - 1, 0))
    same = (
        (old.lo[at] == new.lo)
        & (old.hi[at] == new.hi)
        & (old.epsilon[at] == new.epsilon)
        & (old.delta[at] == new.delta)
        if len(old)
        else np.zeros(len(new), bool)
    )
    keep = ~same
    gone = old.lo[~np.isin(old.lo, new.lo, assume_unique=True)]
    return gone, Spans(new.lo[keep], new.hi[keep], new.epsilon[keep], new.delta[keep])


def add_rounding_up(total: np.ndarray, cost: float) -> np.ndarray:
    """``total + cost`` elementwise, rounded toward +inf (an upper bound of the exact sum).

    TwoSum (Knuth, TAOCP vol. 2, 4.2.2) gives the exact rounding error ``err`` of
    the round-to-nearest sum ``s``: ``s + err`` is the exact sum, so ``err > 0``
    means ``s`` is too small and the next float up is the correct upper bound.
    """
    total = np.asarray(total, np.float64)
    s = total + cost
    bb = s - total
    err = (total - (s - bb)) + (cost - bb)
    return np.where(err > 0, np.nextafter(s, np.inf), s)


def subtract_rounding_down(budget: float, spent: float) -> float:
    """``budget - spent`` rounded toward -inf (never more than may still be spent)."""
    d = budget - spent
    if math.isinf(d):
        return d
    # TwoSum of (budget, -spent): err is the exact remainder of the rounded difference
    bb = d - budget
    err = (budget - (d - bb)) + (-spent - bb)
    return math.nextafter(d, -math.inf) if err < 0 else d


@dataclass(frozen=True)
class Overdraft:
    """The first record a charge would take past its budget."""

    record: int
    spent_epsilon: float
    spent_delta: float


def apply_charge(
    spans: Spans,
    ranges: np.ndarray,
    epsilon: float,
    delta: float,
    epsilon_budget: float,
    delta_budget: float,
) -> tuple[Spans, Overdraft | None]:
    """The spans after charging (epsilon, delta) on ``ranges``, or the first overdraft.

    ``spans`` must hold every stored span that overlaps or touches a range
    (``[a - 1, b + 1]``); the result replaces exactly those spans. ``ranges``:
    (R, 2) sorted disjoint inclusive ranges. Nothing is applied when an
    overdraft is returned (the caller refuses the whole charge).
    """
    a, b = ranges[:, 0], ranges[:, 1]
    cuts = np.sort(np.concatenate((spans.lo, spans.hi + 1, a, b + 1)))
    cuts = cuts[np.concatenate(([True], cuts[1:] != cuts[:-1]))]  # sort-unique (faster here)
    starts, ends = cuts[:-1], cuts[1:] - 1
    # the stored totals and whether a charged range covers each elementary segment
    eps, dlt, in_span = spans.totals_at(starts)
    _, charged = covering(a, b, starts)
    keep = in_span | charged
    starts, ends, eps, dlt, charged = starts[keep], ends[keep], eps[keep], dlt[keep], charged[keep]
    new_eps = np.where(charged, add_rounding_up(eps, epsilon), eps)
    new_dlt = np.where(charged, add_rounding_up(dlt, delta), dlt)
    over = charged & ((new_eps > epsilon_budget) | (new_dlt > delta_budget) | ~np.isfinite(new_eps))
    if over.any():
        i = int(np.flatnonzero(over)[0])
        return spans, Overdraft(int(starts[i]), float(eps[i]), float(dlt[i]))
    return _coalesce(starts, ends, new_eps, new_dlt), None


def _coalesce(lo: np.ndarray, hi: np.ndarray, eps: np.ndarray, dlt: np.ndarray) -> Spans:
    """Merge neighbouring segments (hi + 1 == next lo) with equal totals."""
    if len(lo) == 0:
        return Spans.empty()
    same = (lo[1:] == hi[:-1] + 1) & (eps[1:] == eps[:-1]) & (dlt[1:] == dlt[:-1])
    first = np.concatenate(([True], ~same))
    last = np.concatenate((~same, [True]))
    return Spans(lo[first], hi[last], eps[first], dlt[first])


def replay(entries: list[tuple[np.ndarray, float, float]]) -> Spans:
    """The spans that charging ``entries`` ((ranges, epsilon, delta), in order) gives
    from nothing, with no budget: what the stored spans must equal (audits)."""
    spans = Spans.empty()
    for ranges, epsilon, delta in entries:
        if not len(ranges):
            continue
        lo = int(ranges[0, 0]) - 1
        hi = int(ranges[-1, 1]) + 1
        inside = (spans.hi >= lo) & (spans.lo <= hi)
        part = Spans(spans.lo[inside], spans.hi[inside], spans.epsilon[inside], spans.delta[inside])
        merged, _ = apply_charge(part, ranges, epsilon, delta, np.inf, np.inf)
        keep = ~inside
        spans = _sorted_union(
            Spans(spans.lo[keep], spans.hi[keep], spans.epsilon[keep], spans.delta[keep]), merged
        )
    return spans


def _sorted_union(x: Spans, y: Spans) -> Spans:
    order = np.argsort(np.concatenate((x.lo, y.lo)), kind="stable")
    return Spans(
        np.concatenate((x.lo, y.lo))[order],
        np.concatenate((x.hi, y.hi))[order],
        np.concatenate((x.epsilon, y.epsilon))[order],
        np.concatenate((x.delta, y.delta))[order],
    )
