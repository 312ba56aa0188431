"""Public accelerated ops.

Each op is a :class:`noiseforge.ops.registry.Op` (``registry.get_op(name)``): its
public plan type, ``plan()``, ``example_inputs(device)`` and one backend record per
backend it has -- ``torch`` (the reference) everywhere, ``cpu`` (C++), and on GPUs
``cuda`` (CUDA C++) and/or ``triton``. ``knn_topk`` has no CUDA C++ kernel: Triton
is its GPU path. ``noiseforge info`` prints which backend can run where.

=================  =========================  ===========================  ======================
op                 module                     reference                    Triton kernel
=================  =========================  ===========================  ======================
ldp_noise          ``ops/ldp_noise.py``       ``reference/ldp_noise.py``   ``kernels/ldp_noise.py``
philox_words       ``ops/philox.py``          ``reference/philox.py``      ``kernels/philox.py``
vote_histogram,    ``ops/aggregate.py``       ``reference/aggregate.py``   ``kernels/aggregate.py``
aggregate_labels
knn_topk           ``ops/knn_topk.py``        ``reference/knn_topk.py``    ``kernels/knn_topk.py``
=================  =========================  ===========================  ======================
"""

from noiseforge.ops.aggregate import (
    AggregatePlan,
    Top1,
    aggregate_labels,
    aggregate_top1,
    plan_aggregate_labels,
    plan_soft_label_sum,
    plan_vote_histogram,
    soft_label_sum,
    vote_histogram,
)
from noiseforge.ops.calibration import NoiseCalibration, calibrate_noise
from noiseforge.ops.knn_topk import KnnTopkPlan, knn_topk, plan_knn_topk
from noiseforge.ops.ldp_noise import LdpNoisePlan, ldp_noise, ldp_noise_calibration, plan_ldp_noise
from noiseforge.ops.noise_spec import DiscreteLaplace, Gaussian, Laplace, Mechanism, NoiseSpec
from noiseforge.ops.philox import PhiloxPlan, philox_words, plan_philox_words
from noiseforge.ops.registry import BackendRecord, BackendUnavailableError, Op, get_op, why_not

__all__ = [
    "AggregatePlan",
    "BackendRecord",
    "BackendUnavailableError",
    "DiscreteLaplace",
    "Gaussian",
    "KnnTopkPlan",
    "Laplace",
    "LdpNoisePlan",
    "Mechanism",
    "NoiseCalibration",
    "NoiseSpec",
    "Op",
    "PhiloxPlan",
    "Top1",
    "aggregate_labels",
    "aggregate_top1",
    "calibrate_noise",
    "get_op",
    "knn_topk",
    "ldp_noise",
    "ldp_noise_calibration",
    "philox_words",
    "plan_aggregate_labels",
    "plan_knn_topk",
    "plan_ldp_noise",
    "plan_philox_words",
    "plan_soft_label_sum",
    "plan_vote_histogram",
    "soft_label_sum",
    "vote_histogram",
    "why_not",
]
