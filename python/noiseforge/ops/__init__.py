"""Public accelerated ops. Each op has ``torch``, ``cpu``, ``cuda`` and ``triton``
backends registered in :mod:`noiseforge.ops.registry`."""

from noiseforge.ops.aggregate import (
    Top1,
    aggregate_labels,
    aggregate_top1,
    soft_label_sum,
    vote_histogram,
)
from noiseforge.ops.calibration import NoiseCalibration
from noiseforge.ops.knn_topk import knn_topk
from noiseforge.ops.ldp_noise import calibrate_noise, ldp_noise, ldp_noise_calibration
from noiseforge.ops.philox import philox_words
from noiseforge.ops.registry import BackendUnavailableError, why_not

__all__ = [
    "BackendUnavailableError",
    "NoiseCalibration",
    "Top1",
    "aggregate_labels",
    "aggregate_top1",
    "calibrate_noise",
    "knn_topk",
    "ldp_noise",
    "ldp_noise_calibration",
    "philox_words",
    "soft_label_sum",
    "vote_histogram",
    "why_not",
]
