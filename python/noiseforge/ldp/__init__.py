"""LDPKiT: private inference through an untrusted cloud model.

The privacy ledger, layer-1 release into a NoisedBatch (the only thing the cloud
interface accepts), layer-2 expansion (noise copies, superimposition), querying
with retries and checkpoints (in process or over HTTP), the pipeline
(:func:`ldpkit`, :func:`standard_ldp`), the experiment tasks and Zest model
distances. Experiments from the command line: ``noiseforge ldp run|sweep``.
"""

from noiseforge.ldp.cloud import CloudModel, InProcessCloud
from noiseforge.ldp.expand import add_noise_copies, concat, superimpose
from noiseforge.ldp.extraction import extract_model
from noiseforge.ldp.ledger import BudgetExceededError, PrivacyLedger, Release
from noiseforge.ldp.pipeline import LDPKiTResult, NoiseSpec, ldpkit, standard_ldp
from noiseforge.ldp.query import CloudQueryError, query_cloud
from noiseforge.ldp.release import NoisedBatch, release
from noiseforge.ldp.tasks import LDPTask, get_task, task_cloud_model
from noiseforge.ldp.zest import make_probe, normalized_zest_distance, zest_distance, zest_distances

__all__ = [
    "BudgetExceededError",
    "CloudModel",
    "CloudQueryError",
    "InProcessCloud",
    "LDPKiTResult",
    "LDPTask",
    "NoiseSpec",
    "NoisedBatch",
    "PrivacyLedger",
    "Release",
    "add_noise_copies",
    "concat",
    "extract_model",
    "get_task",
    "ldpkit",
    "make_probe",
    "normalized_zest_distance",
    "query_cloud",
    "release",
    "standard_ldp",
    "superimpose",
    "task_cloud_model",
    "zest_distance",
    "zest_distances",
]
