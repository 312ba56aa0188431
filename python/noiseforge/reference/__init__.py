"""Pure-PyTorch reference implementations: the ground truth of every test and
the fallback backend. They follow the C++ headers in ``csrc/include`` operation
by operation."""

from noiseforge.reference.ldp_noise import ldp_noise_reference
from noiseforge.reference.philox import philox4x32_10, philox_words_reference

__all__ = ["ldp_noise_reference", "philox4x32_10", "philox_words_reference"]
