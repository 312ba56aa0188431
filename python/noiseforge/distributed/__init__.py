"""noiseforge on Ray: the batch jobs as distributed Ray Data pipelines.

``runtime`` connects to a cluster and sets every task's threads from its CPUs;
``ldpkit`` runs LDPKiT and standard eps-LDP with one privacy ledger shared by every
worker (:func:`ldpkit_ray`, :func:`standard_ldp_ray`); ``engine`` is what
``noiseforge ldp run|sweep --engine ray`` runs; ``filtering`` is the relevance
self-validation filter with one task per (model, seed, fold)
(:func:`self_validation_filter_ray`, what ``noiseforge relevance filter --engine ray`` runs). Needs ``pip install 'noiseforge[ray]'``.
Nothing else in noiseforge imports this package except the command line.
"""

from noiseforge.distributed.filtering import self_validation_filter_ray
from noiseforge.distributed.ldpkit import (
    CloudQuery,
    MixedQuery,
    RayLDPKiTResult,
    block_name,
    ldpkit_ray,
    private_dataset,
    ray_release,
    read_private,
    release_block,
    standard_ldp_ray,
    verified_rows,
    with_positions,
)
from noiseforge.distributed.runtime import (
    ACTOR_CPUS,
    TASK_CPUS,
    RayUnavailableError,
    configure_threads,
    connect,
)

__all__ = [
    "ACTOR_CPUS",
    "TASK_CPUS",
    "CloudQuery",
    "MixedQuery",
    "RayLDPKiTResult",
    "RayUnavailableError",
    "block_name",
    "configure_threads",
    "connect",
    "ldpkit_ray",
    "private_dataset",
    "ray_release",
    "read_private",
    "release_block",
    "self_validation_filter_ray",
    "standard_ldp_ray",
    "verified_rows",
    "with_positions",
]
