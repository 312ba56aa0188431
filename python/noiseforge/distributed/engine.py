"""The Ray engines of the batch commands: ``noiseforge ldp run|sweep --engine ray``
(:func:`ldp_engine`) and ``noiseforge relevance augment|mine|filter|run --engine ray``
(:func:`relevance_engine`)."""

from __future__ import annotations

import functools
import tempfile
import uuid
from pathlib import Path

from noiseforge.distributed.ldpkit import ldpkit_ray, standard_ldp_ray
from noiseforge.distributed.runtime import connect
from noiseforge.ldp.experiment import Engine
from noiseforge.ldp.ledger import PrivacyLedger
from noiseforge.relevance.engine import RelevanceEngine


class _FileLedgers:
    """A new SQLite ledger file per call, in one folder (every worker on this machine
    opens it by path); the folder is removed with this object."""

    def __init__(self, folder: str | None) -> None:
        self._tmp = None
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="noiseforge-ray-ledgers-")
            folder = self._tmp.name
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, budget: float) -> PrivacyLedger:
        return PrivacyLedger(budget, path=self.folder / f"ledger-{uuid.uuid4().hex}.sqlite")


def ldp_engine(
    address: str | None = None,
    *,
    workers: int = 2,
    block_rows: int = 1024,
    ledger_folder: str | None = None,
    num_cpus: int | None = None,
) -> Engine:
    """The experiment engine that runs both methods on Ray (connecting now, so that a
    missing cluster fails before any work).

    Each method's ledger is a new SQLite file in ``ledger_folder`` (default a
    temporary folder): the workers must see that folder, so this engine serves
    a cluster on one machine; across machines, call
    :func:`~noiseforge.distributed.ldpkit_ray` with a PostgreSQL ledger.
    """
    connect(address, num_cpus=num_cpus)
    opts = dict(workers=workers, address=address)
    return Engine(
        name="ray",
        standard_ldp=functools.partial(standard_ldp_ray, batch_size=block_rows, **opts),
        ldpkit=functools.partial(ldpkit_ray, block_rows=block_rows, **opts),
        new_ledger=_FileLedgers(ledger_folder),
    )


def relevance_engine(
    address: str | None = None,
    *,
    workers: int = 2,
    shards: int = 1,
    num_cpus: int | None = None,
) -> RelevanceEngine:
    """The relevance data steps on Ray (connecting now, so that a missing cluster fails
    before any work): translation by a pool of ``workers`` translator actors
    (:func:`~noiseforge.distributed.augment.augment_translations_ray`), mining over
    ``shards`` HNSW shards searched by ``workers`` actors
    (:func:`~noiseforge.distributed.mining.add_semantic_negatives_ray`), and filtering
    with one task per (model, seed, fold)
    (:func:`~noiseforge.distributed.filtering.self_validation_filter_ray`); each gives
    the local engine's rows. With ``shards=1`` (the default) mining is bit for bit the
    local engine's; with more shards, the same rows wherever the search is exact
    (see :func:`~noiseforge.distributed.mining.mine_semantic_negatives_ray`)."""
    from noiseforge.distributed.augment import augment_translations_ray
    from noiseforge.distributed.filtering import self_validation_filter_ray
    from noiseforge.distributed.mining import add_semantic_negatives_ray

    connect(address, num_cpus=num_cpus)
    return RelevanceEngine(
        name="ray",
        augment=functools.partial(augment_translations_ray, workers=workers, address=address),
        mine=functools.partial(
            add_semantic_negatives_ray, workers=workers, shards=shards, address=address
        ),
        filter=functools.partial(self_validation_filter_ray, address=address),
    )
