"""LDPKiT: private inference through an untrusted cloud model (in progress).

Built so far: the privacy ledger, layer-1 release into NoisedBatch, and the
cloud interface that accepts only noised data.
"""

from noiseforge.ldp.cloud import CloudModel, InProcessCloud
from noiseforge.ldp.ledger import BudgetExceededError, PrivacyLedger, Release
from noiseforge.ldp.release import NoisedBatch, release

__all__ = [
    "BudgetExceededError",
    "CloudModel",
    "InProcessCloud",
    "NoisedBatch",
    "PrivacyLedger",
    "Release",
    "release",
]
