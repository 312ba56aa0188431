"""LDPKiT: private inference through an untrusted cloud model (in progress).

Built so far: the privacy ledger, layer-1 release into NoisedBatch, layer-2
expansion (noise copies, superimposition), and the cloud interface that accepts
only noised data.
"""

from noiseforge.ldp.cloud import CloudModel, InProcessCloud
from noiseforge.ldp.expand import add_noise_copies, concat, superimpose
from noiseforge.ldp.ledger import BudgetExceededError, PrivacyLedger, Release
from noiseforge.ldp.pipeline import LDPKiTResult, NoiseSpec, ldpkit, standard_ldp
from noiseforge.ldp.query import CloudQueryError, query_cloud
from noiseforge.ldp.release import NoisedBatch, release

__all__ = [
    "BudgetExceededError",
    "CloudModel",
    "CloudQueryError",
    "InProcessCloud",
    "LDPKiTResult",
    "NoiseSpec",
    "NoisedBatch",
    "PrivacyLedger",
    "Release",
    "add_noise_copies",
    "concat",
    "ldpkit",
    "query_cloud",
    "release",
    "standard_ldp",
    "superimpose",
]
