"""Public accelerated ops. Each op has ``torch``, ``cpu``, ``cuda`` and ``triton``
backends registered in :mod:`noiseforge.ops.registry`."""

from noiseforge.ops.calibration import NoiseCalibration
from noiseforge.ops.ldp_noise import calibrate_noise, ldp_noise, ldp_noise_calibration
from noiseforge.ops.philox import philox_words
from noiseforge.ops.registry import BackendUnavailableError, why_not

__all__ = [
    "BackendUnavailableError",
    "NoiseCalibration",
    "calibrate_noise",
    "ldp_noise",
    "ldp_noise_calibration",
    "philox_words",
    "why_not",
]
