"""LDPKiT on Ray: the local engine's results bit for bit with a seed, every record
charged exactly once in a shared SQLite ledger, retried and duplicated blocks charged
once with the same noise, concurrent jobs within the budget, and a query operator that
refuses rows that were not released."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest
import torch

import noiseforge.random
from noiseforge.distributed import (
    CloudQuery,
    block_name,
    ldpkit_ray,
    private_dataset,
    ray_release,
    release_block,
    standard_ldp_ray,
)
from noiseforge.distributed.ldpkit import _CloudSpec
from noiseforge.ldp import (
    BudgetExceededError,
    IdempotencyConflictError,
    InProcessCloud,
    NoiseSpec,
    PrivacyLedger,
    ReleaseIntegrityError,
    ReleaseKey,
)
from noiseforge.ldp.models import train_classifier
from noiseforge.ldp.pipeline import ldpkit, standard_ldp
from noiseforge.ldp.query import CloudQueryError
from tests.support.ldp_task import band_mlp, band_task

EPS = 0.5  # per pixel; a record of 16 pixels costs 8
COST = EPS * 16


@pytest.fixture(scope="module")
def cloud():
    x, y = band_task(1200, seed=0)
    model = band_mlp()
    train_classifier(model, x, y, epochs=3, batch_size=64, progress=False)
    return InProcessCloud(model)


@pytest.fixture
def fresh_seeded_streams(monkeypatch):
    """The seeded streams of a process continue from call to call; each engine's run
    here starts them afresh, as a new process would."""

    def reset():
        monkeypatch.setattr(noiseforge.random, "_seeded", {})

    return reset


def _charged_once(ledger: PrivacyLedger, n: int, blocks: int) -> None:
    entries = ledger.entries()
    assert len(entries) == blocks
    ids = np.concatenate([np.asarray(e.records.to_numpy()) for e in entries])
    assert np.array_equal(np.sort(ids), np.arange(n))  # every record, no record twice
    eps, _ = ledger.spent_many(np.arange(n))
    assert np.all(eps == COST)
    assert all(e.output_digest is not None for e in entries)
    ledger.verify()


def test_seeded_ray_equals_local_bit_for_bit(ray_cluster, cloud, tmp_path, fresh_seeded_streams):
    x, _ = band_task(300, seed=1)
    records = np.arange(300)
    noise = NoiseSpec(epsilon=EPS)
    kw = dict(noise_copies=2, superimposed=1.0, epochs=2, seed=7, progress=False)
    fresh_seeded_streams()
    local = ldpkit(x, records, cloud, PrivacyLedger(COST), noise, band_mlp, **kw)
    fresh_seeded_streams()
    ledger = PrivacyLedger(COST, path=tmp_path / "ledger.sqlite")
    ray_kit = ldpkit_ray(x, records, cloud, ledger, noise, band_mlp, block_rows=64, **kw)
    assert torch.equal(ray_kit.aggregated, local.aggregated)
    assert torch.equal(ray_kit.predictions, local.predictions)
    assert ray_kit.queries == local.queries == 300 * 4
    assert ray_kit.release_id == local.released.release.release_id == "seed-7"
    _charged_once(ledger, 300, blocks=5)  # 300 rows in blocks of 64

    std_local = standard_ldp(x, records, cloud, PrivacyLedger(COST), noise, seed=3, progress=False)
    std_ledger = PrivacyLedger(COST, path=tmp_path / "std.sqlite")
    std_ray = standard_ldp_ray(
        x, records, cloud, std_ledger, noise, seed=3, batch_size=128, progress=False
    )
    assert torch.equal(std_ray, std_local)
    _charged_once(std_ledger, 300, blocks=3)


def test_ray_train_workers_train_the_local_engines_model(
    ray_cluster, cloud, tmp_path, fresh_seeded_streams
):
    """train_workers=2: the local model trained data parallel by Ray Train on the soft
    answers is the local engine's model up to float rounding."""
    x, _ = band_task(300, seed=1)
    records = np.arange(300)
    noise = NoiseSpec(epsilon=EPS)
    kw = dict(noise_copies=1, superimposed=0.0, epochs=2, seed=9, progress=False)
    fresh_seeded_streams()
    local = ldpkit(x, records, cloud, PrivacyLedger(COST), noise, band_mlp, **kw)
    fresh_seeded_streams()
    ledger = PrivacyLedger(COST, path=tmp_path / "ledger.sqlite")
    got = ldpkit_ray(
        x, records, cloud, ledger, noise, band_mlp, block_rows=100, train_workers=2, **kw
    )
    assert torch.equal(got.aggregated, local.aggregated)
    for name, value in local.local_model.state_dict().items():
        torch.testing.assert_close(got.local_model.state_dict()[name], value, rtol=0, atol=1e-5)
    assert int((got.predictions != local.predictions).sum()) <= 3  # a label on a tie may flip
    _charged_once(ledger, 300, blocks=3)


def _released_rows(ds) -> dict[str, np.ndarray]:
    rows = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for name, data in zip(batch["batch"], batch["data"], strict=True):
            rows.setdefault(str(name), []).append(np.asarray(data))
    return rows


def _die_once(batch, *, marker, **kwargs):
    """release_block, then the worker dies the first time (after the charge, before its
    result is returned): the block's task is retried on another worker."""
    out = release_block(batch, **kwargs)
    if int(batch["record"][0]) == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return out


def test_a_retried_or_duplicated_block_is_charged_once_with_the_same_noise(ray_cluster, tmp_path):
    ray = ray_cluster
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    x, _ = band_task(120, seed=2)
    noise = NoiseSpec(epsilon=EPS)
    key = ReleaseKey()  # secret noise: identical draws come from the key, not a seed
    ledger = PrivacyLedger(COST, path=tmp_path / "ledger.sqlite")
    data = private_dataset(x, block_rows=40)
    # the worker of block 0 is killed after charging; Ray retries the block
    marker = str(tmp_path / "died")
    killed = data.map_batches(
        _die_once,
        batch_size=40,
        batch_format="numpy",
        fn_kwargs=dict(marker=marker, ledger=ledger, noise=noise, release_id="r", key=key),
        num_cpus=0.5,
    )
    first = _released_rows(killed.materialize())
    assert os.path.exists(marker)
    _charged_once(ledger, 120, blocks=3)
    # the whole job again, and block 0 twice more in the same dataset: nothing is charged,
    # every copy of a block holds the same noise
    again, _, _ = ray_release(
        data.union(data.limit(40)), None, ledger, noise, release_id="r", key=key, batch_size=40
    )
    second = _released_rows(again.materialize())
    assert set(second) == set(first) and len(second[block_name(np.arange(40))]) == 2
    for name, copies in second.items():
        for rows in copies:
            assert np.array_equal(rows, first[name][0])
    _charged_once(ledger, 120, blocks=3)


def test_two_concurrent_jobs_on_one_ledger_never_exceed_a_budget(ray_cluster, tmp_path):
    x, _ = band_task(300, seed=3)
    noise = NoiseSpec(epsilon=EPS)
    path = tmp_path / "shared.sqlite"
    PrivacyLedger(COST, path=path)  # one release per record fits the budget
    errors = []

    def job(lo: int, hi: int, name: str) -> None:
        try:
            ds, _, _ = ray_release(
                x[lo:hi],
                np.arange(lo, hi),
                PrivacyLedger(path=path),
                noise,
                release_id=name,
                batch_size=50,
            )
            ds.materialize()
        except BudgetExceededError as exc:  # the worker's error, as raised there
            errors.append(exc)

    jobs = [threading.Thread(target=job, args=a) for a in ((0, 200, "a"), (100, 300, "b"))]
    for t in jobs:
        t.start()
    for t in jobs:
        t.join(timeout=150)
    ledger = PrivacyLedger(path=path)
    eps, _ = ledger.spent_many(np.arange(300))
    assert eps.max() <= COST
    assert errors  # records 100..199 fit one of the two jobs only
    charged = np.concatenate([np.asarray(e.records.to_numpy()) for e in ledger.entries()])
    assert len(charged) == len(np.unique(charged))  # no record in two charges
    ledger.verify()


def test_the_query_operator_refuses_rows_that_were_not_released(cloud, tmp_path):
    x, _ = band_task(20, seed=4)
    noise = NoiseSpec(epsilon=EPS)
    ledger = PrivacyLedger(COST, path=tmp_path / "ledger.sqlite")
    batch = {"record": np.arange(20), "position": np.arange(20), "x": x.numpy()}
    packed = release_block(batch, ledger=ledger, noise=noise, release_id="r", seed=1)
    query = CloudQuery(_CloudSpec.of(cloud), ledger, noise, copies=1, key=ReleaseKey())
    out = query(packed)
    assert out["answers"].shape == (1, 20, 3) and out["copy_answers"].shape == (1, 20, 3)
    # raw private rows under the released block's names
    raw = dict(packed, data=x.numpy()[None])
    with pytest.raises(ReleaseIntegrityError, match="not the rows the ledger says"):
        query(raw)
    # a block no ledger entry binds
    forged = dict(packed, batch=np.array(["block-nobody-released-this"]))
    with pytest.raises(ReleaseIntegrityError, match="never released"):
        query(forged)
    # one edited value, or another record's id, is refused too
    edited = packed["data"].copy()
    edited[0, 0, 0] += 0.25
    with pytest.raises(ReleaseIntegrityError):
        query(dict(packed, data=edited))
    with pytest.raises(ReleaseIntegrityError):
        query(dict(packed, records=(packed["records"] + 1)))
    # a ledger that lives in this process only cannot be shared with workers
    with pytest.raises(TypeError, match="workers must open the ledger"):
        ray_release(x, np.arange(20), PrivacyLedger(COST), noise, seed=1)


def test_an_actor_pool_of_http_clients_asks_a_served_cloud(ray_cluster, cloud, tmp_path):
    """Each cloud-client actor opens its own HTTPCloud to `noiseforge cloud serve`."""
    from noiseforge.ldp.http import HTTPCloud
    from noiseforge.ldp.server import CloudServer

    x, _ = band_task(200, seed=6)
    noise = NoiseSpec(epsilon=EPS)
    with CloudServer(cloud.module, input_shape=(16,)) as server:
        remote = HTTPCloud(server.url, timeout=30)
        local = standard_ldp(
            x, np.arange(200), remote, PrivacyLedger(COST), noise, seed=5, progress=False
        )
        ledger = PrivacyLedger(COST, path=tmp_path / "ledger.sqlite")
        labels = standard_ldp_ray(
            x, np.arange(200), remote, ledger, noise, seed=5, batch_size=50, progress=False
        )
    assert torch.equal(labels, local)
    _charged_once(ledger, 200, blocks=4)


def test_secret_noise_ldpkit_on_ray_charges_each_record_once(ray_cluster, cloud, tmp_path):
    """Without a seed: a secret key shared by the blocks, secret copies and pairs."""
    x, _ = band_task(150, seed=8)
    ledger = PrivacyLedger(COST, path=tmp_path / "ledger.sqlite")
    kit = ldpkit_ray(
        x,
        np.arange(150),
        cloud,
        ledger,
        NoiseSpec(epsilon=EPS),
        band_mlp,
        epochs=1,
        block_rows=50,
        progress=False,
    )
    assert kit.queries == 150 * 4 and kit.predictions.shape == (150,) and kit.blocks == 3
    assert not kit.release_id.startswith("seed-")
    assert torch.allclose(kit.aggregated.sum(1), torch.ones(150))
    _charged_once(ledger, 150, blocks=3)
    # every record is spent: the same inputs under a new release are refused, charged nothing
    with pytest.raises(BudgetExceededError):
        standard_ldp_ray(x, np.arange(150), cloud, ledger, NoiseSpec(epsilon=EPS), progress=False)
    _charged_once(ledger, 150, blocks=3)


class _CountingCloud(InProcessCloud):
    """An in-process cloud that logs every request's row count to a file (the actors
    run in other processes) and fails -- a dead cloud -- once ``fail_after`` rows were
    answered."""

    def __init__(self, module, log: str, fail_after: int | None = None) -> None:
        super().__init__(module)
        self.log, self.fail_after = log, fail_after

    def _predict(self, data):
        if self.fail_after is not None and _asked(self.log) >= self.fail_after:
            raise OSError("the cloud is down")
        answers = super()._predict(data)
        with open(self.log, "a") as fh:
            fh.write(f"{data.shape[0]}\n")
        return answers


def _asked(log) -> int:
    return sum(int(n) for n in open(log).read().split()) if os.path.exists(log) else 0


@pytest.mark.parametrize("secret", [False, True], ids=["seeded", "secret-key"])
def test_a_resumed_job_asks_only_what_was_not_answered(
    ray_cluster, cloud, tmp_path, fresh_seeded_streams, secret
):
    """The cloud dies mid-job; the job run again with the same names (and key) and the
    checkpoint folder asks the cloud only for the answers not kept, charges nothing,
    and ends with the uninterrupted job's results."""
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    x, _ = band_task(200, seed=9)
    noise = NoiseSpec(epsilon=EPS)
    key = ReleaseKey() if secret else None
    kw = dict(noise_copies=1, superimposed=0.5, epochs=1, block_rows=50, workers=1)
    kw.update(release_id="job-1", key=key) if secret else kw.update(seed=11)
    total = 200 * 2 + 100  # released rows, one copy each, 100 pairs
    fresh_seeded_streams()
    reference = ldpkit_ray(
        x, np.arange(200), cloud, PrivacyLedger(COST, path=tmp_path / "ref.sqlite"),
        noise, band_mlp, progress=False, **kw,
    )  # fmt: skip
    path, ckpt = tmp_path / "ledger.sqlite", tmp_path / "answers"
    log = str(tmp_path / "asked.log")
    dying = _CountingCloud(cloud.module, log, fail_after=230)
    fresh_seeded_streams()
    with pytest.raises(CloudQueryError, match="the cloud is down"):
        ldpkit_ray(
            x, np.arange(200), dying, PrivacyLedger(COST, path=path), noise, band_mlp,
            checkpoint=ckpt, progress=False, **kw,
        )  # fmt: skip
    first = _asked(log)
    assert 230 <= first < total and any(ckpt.iterdir())
    ledger = PrivacyLedger(path=path)
    _charged_once(ledger, 200, blocks=4)  # the release finished before the cloud died
    os.remove(log)
    fresh_seeded_streams()
    resumed = ldpkit_ray(
        x, np.arange(200), _CountingCloud(cloud.module, log), ledger, noise, band_mlp,
        checkpoint=ckpt, progress=False, **kw,
    )  # fmt: skip
    assert first + _asked(log) == total  # no answer lost, none asked twice
    _charged_once(ledger, 200, blocks=4)  # replayed: nothing charged twice
    assert torch.equal(resumed.aggregated, reference.aggregated)
    assert torch.equal(resumed.predictions, reference.predictions)
    assert resumed.release_id == reference.release_id
    if secret:  # another key cannot resume the release: refused before any noise is drawn
        with pytest.raises(IdempotencyConflictError, match="another noise key"):
            ldpkit_ray(
                x, np.arange(200), cloud, ledger, noise, band_mlp, checkpoint=ckpt,
                progress=False, **dict(kw, key=ReleaseKey()),
            )  # fmt: skip
        _charged_once(ledger, 200, blocks=4)


def test_a_checkpoint_that_is_a_file_is_refused(cloud, tmp_path):
    x, _ = band_task(20, seed=4)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="give a folder"):
        standard_ldp_ray(
            x, np.arange(20), cloud, PrivacyLedger(COST, path=tmp_path / "l.sqlite"),
            NoiseSpec(epsilon=EPS), seed=1, checkpoint=tmp_path / "file", progress=False,
        )  # fmt: skip


def test_bad_jobs_are_refused_before_anything_is_charged(cloud, tmp_path):
    """Ids the local release refuses, a resume that would form other blocks, a secret
    checkpointed job without its key, and arguments the local engine refuses."""
    from noiseforge.ldp import release

    x, _ = band_task(20, seed=4)
    noise = NoiseSpec(epsilon=EPS)
    ledger = PrivacyLedger(3 * COST, path=tmp_path / "l.sqlite")
    with pytest.raises(TypeError, match="silently rounded"):
        ray_release(x, np.arange(20) + 0.5, ledger, noise, seed=1)
    with pytest.raises(ValueError, match="twice"):
        ray_release(x, np.r_[np.arange(19), 3], ledger, noise, seed=1)
    key = ReleaseKey()
    release(x[:10], np.arange(10), ledger, noise, key=key, release_id="r", batch="first-run")
    with pytest.raises(ValueError, match=r"would not form.*same block size"):
        ray_release(x, np.arange(20), ledger, noise, key=key, release_id="r", batch_size=5)
    assert len(ledger.entries()) == 1 and ledger.spent(15) == (0.0, 0.0)
    kit = dict(cloud=cloud, ledger=ledger, noise=noise, make_local_model=band_mlp, progress=False)
    with pytest.raises(ValueError, match="needs release_id= and key="):
        ldpkit_ray(x, np.arange(20), checkpoint=tmp_path / "c", **kit)
    with pytest.raises(ValueError, match="needs release_id= and key="):
        standard_ldp_ray(x, np.arange(20), cloud, ledger, noise, checkpoint=tmp_path / "c")
    with pytest.raises(ValueError, match="weight must be in"):
        ldpkit_ray(x, np.arange(20), weight=1.5, **kit)
    with pytest.raises(ValueError, match="noise_copies must be an int"):
        ldpkit_ray(x, np.arange(20), noise_copies=1.5, **kit)
    assert len(ledger.entries()) == 1


def test_each_actor_opens_an_http_cloud_with_the_callers_settings():
    from noiseforge.ldp.http import HTTPCloud

    spec = _CloudSpec.of(HTTPCloud("http://127.0.0.1:9/", timeout=7.5, max_response_bytes=1 << 20))
    opened = spec.open()
    assert isinstance(opened, HTTPCloud) and opened is not spec
    assert (opened.url, opened.timeout, opened.max_response_bytes) == (
        "http://127.0.0.1:9",
        7.5,
        1 << 20,
    )
    with pytest.raises(TypeError, match="CloudModel"):
        _CloudSpec.of(object())
