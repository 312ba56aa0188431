"""Private inputs read by Ray Data: a Parquet table of (record id, row) in any order,
or a .npy file, gives the results of the local engine on the rows in record-id
order, and bad tables are refused with the column or id at fault."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import noiseforge.random
from noiseforge.distributed import ldpkit_ray, read_private, standard_ldp_ray
from noiseforge.ldp import InProcessCloud, NoiseSpec, PrivacyLedger
from noiseforge.ldp.models import train_classifier
from noiseforge.ldp.pipeline import ldpkit, standard_ldp
from tests.support.ldp_task import band_mlp, band_task

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

EPS = 0.5
COST = EPS * 16


@pytest.fixture(scope="module")
def cloud():
    x, y = band_task(600, seed=0)
    model = band_mlp()
    train_classifier(model, x, y, epochs=2, batch_size=64, progress=False)
    return InProcessCloud(model)


def _table(path, x: torch.Tensor, ids: np.ndarray, id_name: str = "customer") -> None:
    rows = pa.array(list(x.numpy()), type=pa.list_(pa.float32()))
    pq.write_table(pa.table({id_name: pa.array(ids), "pixels": rows}), path, row_group_size=37)


def test_a_parquet_table_in_any_order_equals_the_local_engine_in_record_order(
    ray_cluster, cloud, tmp_path, monkeypatch
):
    x, _ = band_task(160, seed=5)
    ids = 1000 + np.random.default_rng(1).permutation(400)[:160]  # sparse, shuffled ids
    path = tmp_path / "private.parquet"
    _table(path, x, ids)
    order = np.argsort(ids)
    xs, ids_sorted = x[torch.from_numpy(order)], ids[order]
    noise = NoiseSpec(epsilon=EPS)
    ds = read_private(path, column="pixels", record_column="customer")
    local = standard_ldp(xs, ids_sorted, cloud, PrivacyLedger(COST), noise, seed=3, progress=False)
    ledger = PrivacyLedger(COST, path=tmp_path / "l.sqlite")
    labels = standard_ldp_ray(ds, None, cloud, ledger, noise, seed=3, batch_size=50, progress=False)
    assert torch.equal(labels, local)
    charged = np.concatenate([np.asarray(e.records.to_numpy()) for e in ledger.entries()])
    assert np.array_equal(np.sort(charged), ids_sorted)  # every record once, in blocks
    assert all(len(e.records) <= 50 for e in ledger.entries())  # of at most batch_size
    # the whole LDPKiT job from the same table, against the local engine
    kw = dict(noise_copies=1, superimposed=0.5, epochs=1, seed=4, progress=False)
    monkeypatch.setattr(noiseforge.random, "_seeded", {})
    want = ldpkit(xs, ids_sorted, cloud, PrivacyLedger(COST), noise, band_mlp, **kw)
    monkeypatch.setattr(noiseforge.random, "_seeded", {})
    got = ldpkit_ray(
        read_private(path, column="pixels", record_column="customer"), None, cloud,
        PrivacyLedger(COST, path=tmp_path / "k.sqlite"), noise, band_mlp, block_rows=50,
        workers=1, **kw,
    )  # fmt: skip
    assert torch.equal(got.aggregated, want.aggregated)
    assert torch.equal(got.predictions, want.predictions)
    assert torch.equal(got.records, torch.from_numpy(ids_sorted))


def test_a_npy_file_is_read_with_ids_by_row(ray_cluster, cloud, tmp_path):
    x, _ = band_task(60, seed=6)
    np.save(tmp_path / "x.npy", x.numpy())
    noise = NoiseSpec(epsilon=EPS)
    ledger = PrivacyLedger(COST, path=tmp_path / "l.sqlite")
    got = standard_ldp_ray(
        read_private(tmp_path / "x.npy", block_rows=25), None, cloud, ledger, noise, seed=2,
        batch_size=25, progress=False,
    )  # fmt: skip
    want = standard_ldp(x, np.arange(60), cloud, PrivacyLedger(COST), noise, seed=2, progress=False)
    assert torch.equal(got, want)


def test_bad_tables_are_refused_with_the_fault_named(ray_cluster, tmp_path):
    x, _ = band_task(10, seed=7)
    path = tmp_path / "t.parquet"
    _table(path, x, np.arange(10))
    with pytest.raises(ValueError, match=r"no column 'record'.*record_column="):
        read_private(path, column="pixels")
    with pytest.raises(ValueError, match="no column 'x'"):
        read_private(path, record_column="customer")
    _table(path, x, np.array([3, 1, 4, 1, 5, 9, 2, 6, 8, 7]))
    with pytest.raises(ValueError, match="record id 1 appears more than once"):
        read_private(path, column="pixels", record_column="customer")
    with pytest.raises(FileNotFoundError, match="no private inputs"):
        read_private(tmp_path / "missing.parquet")
