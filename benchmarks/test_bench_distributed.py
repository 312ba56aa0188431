"""The Ray engine's costs, each against the local engine in the same run (quick).

* ``ray-block-overhead``: an identity ``map_batches`` over 16 blocks (0.5-CPU tasks,
  as noiseforge's operators ask) against the same 16 blocks copied in this process:
  Ray's cost per block, the floor of every stage of the Ray engine.
* ``release``: :func:`noiseforge.distributed.ray_release` of 4096 records x 16
  features in 4 blocks (4 ledger entries) against :func:`noiseforge.ldp.release`
  of the same rows (one entry), both on an SQLite ledger.

``benchmarks/distributed_throughput.py`` measures every stage with 1 and 2
workers and at two sizes; this file is the quick check that the paths run.

Run: ``pytest benchmarks/test_bench_distributed.py --benchmark-enable
--benchmark-json=bench.json`` then ``python benchmarks/report.py bench.json``.
Skipped when Ray Data is not installed (``pip install 'noiseforge[ray]'``).
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="the Ray benchmarks need pip install 'noiseforge[ray]'")
pytest.importorskip("ray.data", reason="the Ray benchmarks need pip install 'noiseforge[ray]'")

from noiseforge.distributed import private_dataset, ray_release  # noqa: E402
from noiseforge.distributed.runtime import TASK_CPUS  # noqa: E402
from noiseforge.ldp import NoiseSpec, PrivacyLedger, release  # noqa: E402

BLOCKS, BLOCK_ROWS = 16, 256
RELEASE_ROWS, RELEASE_BLOCK = 4096, 1024
NOISE = NoiseSpec(epsilon=0.5, lower=0.0, upper=1.0)


@pytest.fixture(scope="module")
def ray_node():
    """A local Ray instance of 2 CPUs (or ``$RAY_ADDRESS``), shut down if started here."""
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return torch.rand(BLOCKS * BLOCK_ROWS, 16, generator=torch.Generator().manual_seed(0)).numpy()


def _identity(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return batch


def test_block_overhead_ray(benchmark, ray_node, rows):
    data = private_dataset(rows, block_rows=BLOCK_ROWS).materialize()
    benchmark.group = "ray-block-overhead"
    benchmark.extra_info.update(elements=BLOCKS)
    out = {}

    def run():
        ds = data.map_batches(
            _identity, batch_size=None, batch_format="numpy", num_cpus=TASK_CPUS
        ).materialize()
        out["ds"] = ds

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert out["ds"].num_blocks() == BLOCKS
    # the identity changed nothing: every row comes back, under its position
    got = {"position": [], "x": []}
    for batch in out["ds"].iter_batches(batch_size=None, batch_format="numpy"):
        for k in got:
            got[k].append(batch[k])
    order = np.argsort(np.concatenate(got["position"]))
    assert np.array_equal(np.concatenate(got["x"])[order], rows)


def test_block_overhead_peer_local_copy(benchmark, rows):
    benchmark.group = "ray-block-overhead"
    benchmark.extra_info.update(elements=BLOCKS)
    blocks = [
        {"record": np.arange(s, s + BLOCK_ROWS), "x": rows[s : s + BLOCK_ROWS]}
        for s in range(0, len(rows), BLOCK_ROWS)
    ]

    def run():
        return [{k: v.copy() for k, v in _identity(b).items()} for b in blocks]

    out = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert len(out) == BLOCKS and all(
        np.array_equal(o["x"], b["x"]) for o, b in zip(out, blocks, strict=True)
    )


@pytest.fixture(scope="module")
def release_rows() -> torch.Tensor:
    return torch.rand(RELEASE_ROWS, 16, generator=torch.Generator().manual_seed(1))


def _ledger(tmp_path) -> PrivacyLedger:
    return PrivacyLedger(math.inf, path=tmp_path / f"{uuid.uuid4().hex}.sqlite")


def test_release_ray(benchmark, ray_node, release_rows, tmp_path):
    data = private_dataset(release_rows, block_rows=RELEASE_BLOCK).materialize()
    benchmark.group = "release-4096-x-16"
    benchmark.extra_info.update(elements=release_rows.numel())
    ledgers = []

    def setup():
        ledgers.append(_ledger(tmp_path))
        return (ledgers[-1],), {}

    def run(ledger):
        ds, _, _ = ray_release(data, None, ledger, NOISE, seed=3, batch_size=RELEASE_BLOCK)
        ds.materialize()

    benchmark.pedantic(run, setup=setup, rounds=3, warmup_rounds=1)
    for ledger in ledgers:  # every run charged every record once, one entry per block
        entries = ledger.entries()
        assert len(entries) == RELEASE_ROWS // RELEASE_BLOCK
        ids = np.concatenate([np.asarray(e.records.to_numpy()) for e in entries])
        assert np.array_equal(np.sort(ids), np.arange(RELEASE_ROWS))
        assert all(e.output_digest is not None for e in entries)


def test_release_peer_local_engine(benchmark, release_rows, tmp_path):
    benchmark.group = "release-4096-x-16"
    benchmark.extra_info.update(elements=release_rows.numel())
    ids = np.arange(RELEASE_ROWS)
    out = {}

    def setup():
        return (_ledger(tmp_path),), {}

    def run(ledger):
        out["batch"] = release(release_rows, ids, ledger, NOISE, seed=3)
        out["ledger"] = ledger

    benchmark.pedantic(run, setup=setup, rounds=3, warmup_rounds=1)
    assert len(out["ledger"].entries()) == 1
    assert out["batch"].data.shape == release_rows.shape
    assert not torch.equal(out["batch"].data, release_rows)  # noise was drawn
