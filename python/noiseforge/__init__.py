"""noiseforge: a training-data engine for multilingual search relevance and
LDPKiT private inference, on an accelerated C++/CUDA/Triton core.

``noiseforge.ops`` holds the accelerated ops; ``noiseforge info`` (or
``python -m noiseforge info``) prints the build and the backend table.
"""

from noiseforge._version import __version__
from noiseforge.ops import BackendUnavailableError, ldp_noise, philox_words
from noiseforge.random import PhiloxGenerator

__all__ = ["BackendUnavailableError", "PhiloxGenerator", "__version__", "ldp_noise", "philox_words"]
