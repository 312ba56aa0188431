"""noiseforge on Ray: the batch jobs as distributed Ray Data pipelines.

- ``runtime``: connect to a cluster, per-task threads, fractional CPUs, ``gather``;
- ``ldpkit``: LDPKiT and standard eps-LDP with one privacy ledger shared by every
  worker, resumable from answer checkpoints, over in-memory arrays or inputs read by
  Ray Data (:func:`ldpkit_ray`, :func:`standard_ldp_ray`, :func:`read_private`);
- ``augment``: translation augmentation on a translator actor pool
  (:func:`augment_translations_ray`);
- ``embed``: embeddings on an encoder actor pool (:func:`embed_ray`);
- ``mining``: semantic negatives over sharded HNSW indexes
  (:func:`mine_semantic_negatives_ray`);
- ``filtering``: self-validation filtering, one task per (model, seed, fold)
  (:func:`self_validation_filter_ray`);
- ``train``: a local model trained data parallel by Ray Train (:func:`train_ray`);
- ``engine``: what ``--engine ray`` runs (``ldp_engine``, ``relevance_engine``).

Needs ``pip install 'noiseforge[ray]'``. Nothing else in noiseforge imports this
package except the command line.
"""

from noiseforge.distributed.augment import augment_translations_ray
from noiseforge.distributed.embed import embed_ray
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
from noiseforge.distributed.mining import (
    add_semantic_negatives_ray,
    mine_semantic_negatives_ray,
)
from noiseforge.distributed.runtime import (
    ACTOR_CPUS,
    TASK_CPUS,
    RayUnavailableError,
    configure_threads,
    connect,
)
from noiseforge.distributed.train import train_ray

__all__ = [
    "ACTOR_CPUS",
    "TASK_CPUS",
    "CloudQuery",
    "MixedQuery",
    "RayLDPKiTResult",
    "RayUnavailableError",
    "add_semantic_negatives_ray",
    "augment_translations_ray",
    "block_name",
    "configure_threads",
    "connect",
    "embed_ray",
    "ldpkit_ray",
    "mine_semantic_negatives_ray",
    "private_dataset",
    "ray_release",
    "read_private",
    "release_block",
    "self_validation_filter_ray",
    "standard_ldp_ray",
    "train_ray",
    "verified_rows",
    "with_positions",
]
