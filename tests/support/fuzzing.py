"""Bounded fuzzing for the test suite: one place that sets the budget.

Every fuzz test draws its cases with :func:`fuzz_settings`: hypothesis with a
fixed seed (``derandomize=True``, so CI sees the same cases on every run) and
a small number of examples. ``NOISEFORGE_FUZZ_SCALE=N`` multiplies every
budget for a longer run (for example ``NOISEFORGE_FUZZ_SCALE=50 pytest -k fuzz``);
``NOISEFORGE_FUZZ_RANDOM=1`` draws fresh random cases instead of the fixed ones.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = max(1, int(os.environ.get("NOISEFORGE_FUZZ_SCALE", "1")))
RANDOM = os.environ.get("NOISEFORGE_FUZZ_RANDOM", "0") == "1"


def fuzz_settings(examples: int) -> settings:
    """hypothesis settings for ``examples`` cases (times NOISEFORGE_FUZZ_SCALE)."""
    return settings(
        max_examples=examples * SCALE,
        derandomize=not RANDOM,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
