"""LDPKiT: private inference through an untrusted cloud model.

The privacy ledger (SQLite or PostgreSQL, shared by any number of processes),
layer-1 release into a sealed NoisedBatch (the only thing the cloud interface
accepts, checked again before it is sent), layer-2 expansion (noise copies,
superimposition, postprocess), querying with answer checks, retries and
checkpoints bound to their query set (in process or over HTTP), the pipeline
(:func:`ldpkit`, :func:`standard_ldp`), the experiment tasks and Zest model
distances. Experiments from the command line: ``noiseforge ldp run|sweep``.
"""

from noiseforge.ldp.cloud import CloudModel, InProcessCloud
from noiseforge.ldp.expand import add_noise_copies, concat, superimpose
from noiseforge.ldp.extraction import extract_model
from noiseforge.ldp.ledger import (
    BudgetExceededError,
    IdempotencyConflictError,
    LedgerCorruptError,
    LedgerStoreError,
    PrivacyLedger,
    RecordSet,
    Release,
    ReleaseConflictError,
)
from noiseforge.ldp.pipeline import LDPKiTResult, NoiseSpec, ldpkit, standard_ldp
from noiseforge.ldp.query import CloudAnswerError, CloudQueryError, query_cloud
from noiseforge.ldp.release import NoisedBatch, postprocess, release, released_batch
from noiseforge.ldp.seal import ReleaseIntegrityError
from noiseforge.ldp.tasks import LDPTask, get_task, task_cloud_model
from noiseforge.ldp.zest import make_probe, normalized_zest_distance, zest_distance, zest_distances
from noiseforge.ops.noise_spec import DiscreteLaplace, Gaussian, Laplace
from noiseforge.random import ReleaseKey

__all__ = [
    "BudgetExceededError",
    "CloudAnswerError",
    "CloudModel",
    "CloudQueryError",
    "DiscreteLaplace",
    "Gaussian",
    "IdempotencyConflictError",
    "InProcessCloud",
    "LDPKiTResult",
    "LDPTask",
    "Laplace",
    "LedgerCorruptError",
    "LedgerStoreError",
    "NoiseSpec",
    "NoisedBatch",
    "PrivacyLedger",
    "RecordSet",
    "Release",
    "ReleaseConflictError",
    "ReleaseIntegrityError",
    "ReleaseKey",
    "add_noise_copies",
    "concat",
    "extract_model",
    "get_task",
    "ldpkit",
    "make_probe",
    "normalized_zest_distance",
    "postprocess",
    "query_cloud",
    "release",
    "released_batch",
    "standard_ldp",
    "superimpose",
    "task_cloud_model",
    "zest_distance",
    "zest_distances",
]
