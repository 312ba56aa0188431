"""Layer-1 release and layer-2 post-processing: charging before noise, sealed
batches that refuse every bypass before anything reaches a cloud (in process, over
HTTP, through query_cloud), retries that reproduce a release instead of re-drawing
it, and seeded noise that does not depend on the worker."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from noiseforge import random as nf_random
from noiseforge.ldp import (
    BudgetExceededError,
    DiscreteLaplace,
    Gaussian,
    IdempotencyConflictError,
    InProcessCloud,
    Laplace,
    NoisedBatch,
    NoiseSpec,
    PrivacyLedger,
    ReleaseConflictError,
    ReleaseIntegrityError,
    ReleaseKey,
    add_noise_copies,
    concat,
    postprocess,
    query_cloud,
    release,
    superimpose,
)
from noiseforge.ldp.http import HTTPCloud
from noiseforge.ldp.server import CloudServer

ROOT = Path(__file__).resolve().parents[2]


def _released(n=5, d=4, ledger=None, **kw):
    x = torch.rand(n, d, generator=torch.Generator().manual_seed(n * 31 + d))
    ledger = ledger or PrivacyLedger(100.0)
    return x, release(x, np.arange(n), ledger, epsilon=2.0, lower=0.0, upper=1.0, **kw)


def test_release_charges_the_total_of_all_features_and_refuses_a_second_release():
    x = torch.rand(5, 4)
    ledger = PrivacyLedger(epsilon_budget=10.0)
    batch = release(x, np.arange(5), ledger, epsilon=2.0, lower=0.0, upper=1.0, seed=1)
    assert isinstance(batch, NoisedBatch) and batch.data.shape == (5, 4)
    assert ledger.spent(0) == (8.0, 0.0)  # 4 features x eps 2 (basic composition)
    assert not torch.equal(batch.data, x)
    assert batch.release.output_digest is None and ledger.releases[0].output_digest == batch.digest
    with pytest.raises(BudgetExceededError):
        release(x, np.arange(5), ledger, epsilon=2.0, lower=0.0, upper=1.0)
    with pytest.raises(ValueError, match="3 ids for 5 inputs"):
        release(x, [0, 1, 2], ledger, epsilon=0.1, lower=0.0, upper=1.0)
    with pytest.raises(ValueError, match="listed twice"):
        release(x, [0, 1, 2, 3, 3], ledger, epsilon=0.1, lower=0.0, upper=1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        release(
            x.clone().fill_(float("nan")), np.arange(10, 15), ledger, epsilon=0.1, lower=0, upper=1
        )
    assert ledger.spent(10) == (0.0, 0.0), "a release that fails validation charges nothing"


def test_the_cloud_answers_released_batches_and_refuses_raw_data():
    cloud = InProcessCloud(torch.nn.Linear(4, 3), batch_size=2)
    raw, batch = _released()
    with pytest.raises(TypeError, match="refusing to send Tensor"):
        cloud.predict(raw)
    probs = cloud.predict(batch)
    assert probs.shape == (5, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    flipped = postprocess(batch, lambda d, r: (d.flip(0), r.flip(0)))  # post-processing is free
    assert cloud.predict(flipped).shape == (5, 3)
    torch.testing.assert_close(flipped.data, batch.data.flip(0))


# --------------------------------------------------------------------------- bypasses


class CountingModule(torch.nn.Module):
    """A cloud model that counts the rows that reached it."""

    def __init__(self, d=4, c=3):
        super().__init__()
        self.linear = torch.nn.Linear(d, c)
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.linear(x)


def _tamper_in_place(batch, raw):
    batch.data.copy_(raw)


def _tamper_numpy_view(batch, raw):
    batch.data.numpy()[:] = raw.numpy()


def _tamper_records(batch, raw):
    batch.records.fill_(0)


def _tamper_one_row(batch, raw):
    batch.data[3] = raw[3]


TAMPERING = [
    pytest.param(_tamper_in_place, id="copy_"),
    pytest.param(_tamper_numpy_view, id="numpy-view"),
    pytest.param(_tamper_records, id="records"),
    pytest.param(_tamper_one_row, id="one-row"),
]


def _senders(module):
    """Every way rows leave the client: predict in process, over HTTP, query_cloud."""
    server = CloudServer(module).start()
    module.rows = 0  # the server's start-up probe (one zero row) is not a sent row
    http = HTTPCloud(server.url, timeout=10)
    return server, {
        "in-process": lambda b: InProcessCloud(module).predict(b),
        "http": http.predict,
        "query_cloud": lambda b: query_cloud(http, b, batch_size=2, retries=0, progress=False),
    }


@pytest.mark.parametrize("tamper", TAMPERING)
def test_edited_released_rows_never_reach_a_cloud(tamper):
    module = CountingModule()
    server, senders = _senders(module)
    try:
        for name, send in senders.items():
            raw, batch = _released()
            tamper(batch, raw)
            with pytest.raises(ReleaseIntegrityError, match="changed after noiseforge released"):
                send(batch)
            assert module.rows == 0, f"{name} let edited rows through"
            # and post-processing refuses to launder them
            for expand in (
                lambda b: add_noise_copies(b, 2, epsilon=1.0, lower=0.0, upper=1.0),
                lambda b: superimpose(b, 3),
                lambda b: concat(b),
                lambda b: postprocess(b, lambda d, r: d),
            ):
                with pytest.raises(ReleaseIntegrityError):
                    expand(batch)
    finally:
        server.stop()


def test_wrapping_copying_and_forging_are_refused():
    raw, batch = _released()
    with pytest.raises(AttributeError, match=r"derive\(\) was removed"):
        batch.derive(raw, batch.records)
    with pytest.raises(TypeError, match="cannot be created directly"):
        NoisedBatch(raw, batch.records, batch.calibration, batch.release)
    with pytest.raises(TypeError):
        dataclasses.replace(batch, data=raw)
    with pytest.raises(AttributeError, match="read-only"):
        batch.data = raw
    for dup in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be"):
            dup(batch)
    with pytest.raises(TypeError, match="cannot be created directly"):
        NoisedBatch._mint(object(), raw, batch.records, batch.calibration, batch.release)
    module = CountingModule()
    cloud = InProcessCloud(module)
    # a forged object: no seal, or another batch's seal over raw data
    forged = object.__new__(NoisedBatch)
    with pytest.raises(ReleaseIntegrityError, match="no seal"):
        cloud.predict(forged)
    stolen = batch._rows(0, 5)
    object.__setattr__(stolen._seal, "data", raw.clone())
    with pytest.raises(ReleaseIntegrityError):
        cloud.predict(stolen)

    class Impostor(NoisedBatch):
        def __init__(self):
            pass

    with pytest.raises(ReleaseIntegrityError):
        cloud.predict(Impostor())
    assert module.rows == 0


def test_postprocess_hands_over_released_rows_only_and_checks_record_ids():
    _, batch = _released()
    seen = {}

    def double_noise(data, records):
        seen["data"] = data
        data.mul_(0.5)  # the function gets a private copy: the release is unchanged
        return data

    out = postprocess(batch, double_noise)
    torch.testing.assert_close(out.data, batch.data * 0.5)
    assert seen["data"].data_ptr() != batch.data.data_ptr()
    InProcessCloud(torch.nn.Linear(4, 3)).predict(batch)  # still intact
    with pytest.raises(ValueError, match="record id 99"):
        postprocess(batch, lambda d, r: (d, torch.full_like(r, 99)))
    mixed = postprocess(batch, lambda d, r: (d[:2] + d[2:4], torch.tensor([-1, -1])))
    assert mixed.records.tolist() == [-1, -1]
    with pytest.raises(ValueError, match="one id per row"):
        postprocess(batch, lambda d, r: (d[:2], r))


def test_layer_two_expansion_is_free_and_stays_in_the_domain():
    x = torch.rand(6, 3)
    ledger = PrivacyLedger(epsilon_budget=30.0)
    batch = release(x, np.arange(10, 16), ledger, epsilon=5.0, lower=0.0, upper=1.0, seed=2)
    spent = ledger.spent(10)
    more = add_noise_copies(batch, 4, epsilon=5.0, lower=0.0, upper=1.0, seed=3)
    mixed = superimpose(batch, 7, weight=0.3, seed=4)
    assert ledger.spent(10) == spent and len(ledger.releases) == 1, "layer 2 must not charge"
    assert (
        more.data.shape == (24, 3)
        and more.records.tolist() == np.repeat(np.arange(10, 16), 4).tolist()
    )
    assert mixed.data.shape == (7, 3) and (mixed.records == -1).all()
    assert float(more.data.min()) >= 0.0 and float(more.data.max()) <= 1.0
    d = batch.data
    combos = 0.3 * d[:, None, :] + 0.7 * d[None, :, :]
    for row in mixed.data:
        assert torch.isclose(combos, row, atol=1e-6).all(-1).any()
    joined = concat(batch, more, mixed)
    assert len(joined) == 6 + 24 + 7
    with pytest.raises(TypeError, match="not raw data"):
        add_noise_copies(x, 2, epsilon=1.0, lower=0.0, upper=1.0)
    other = release(torch.rand(2, 3), [0, 1], ledger, epsilon=1.0, lower=0.0, upper=1.0)
    with pytest.raises(ValueError, match="one release only"):
        concat(batch, other)


# --------------------------------------------------------------------------- retries


def test_a_retried_release_returns_the_same_rows_and_charges_once(tmp_path):
    ledger = PrivacyLedger(10.0, path=tmp_path / "l.sqlite")
    x = torch.rand(4, 3)
    key = ReleaseKey()
    args = dict(epsilon=1.0, lower=0.0, upper=1.0, key=key, release_id="job", batch="7")
    first = release(x, [0, 1, 2, 3], ledger, **args)
    again = release(x, [0, 1, 2, 3], ledger, **args)
    assert again.release.replayed and torch.equal(again.data, first.data)
    assert ledger.spent(0) == (3.0, 0.0)
    # the key travels to another process (pickled) and reproduces the batch there
    clone = pickle.loads(pickle.dumps(key))
    assert clone == key and repr(clone) == repr(key) and "secret" in repr(key)
    assert torch.equal(release(x, [0, 1, 2, 3], ledger, **{**args, "key": clone}).data, first.data)
    # changed data under the same names: refused before anything is returned
    with pytest.raises(ReleaseConflictError, match="released before with other data"):
        release(x + 0.01, [0, 1, 2, 3], ledger, **args)
    # a retry without the release's key would draw new noise: refused
    with pytest.raises(IdempotencyConflictError, match="another noise key"):
        release(x, [0, 1, 2, 3], ledger, **{**args, "key": ReleaseKey()})
    with pytest.raises(ReleaseConflictError, match="another noise key"):
        release(x[:1], [9], ledger, **{**args, "key": ReleaseKey(), "batch": "8"})
    assert ledger.spent(0) == (3.0, 0.0) and ledger.spent(9) == (0.0, 0.0)
    # a secret key gives a record independent noise in each batch (each charged)
    b2 = release(x[:1], [0], ledger, **{**args, "batch": "other"})
    assert not torch.equal(b2.data[0], first.data[0]) and ledger.spent(0) == (6.0, 0.0)


def _unlimited_release(x, records, **kw):
    """A release on [0, 1] into a fresh ledger without a practical limit."""
    kw.setdefault("epsilon", 1.0)
    return release(x, records, PrivacyLedger(1e9), lower=0.0, upper=1.0, **kw)


def test_every_record_draws_its_own_stream():
    # 4000 equal inputs: every record's noise vector differs from every other's
    x = torch.full((4000, 8), 0.5)
    for seed in (None, 3):
        batch = _unlimited_release(x, np.arange(4000), seed=seed, clamp=False)
        assert len(torch.unique(batch.data, dim=0)) == 4000
    # a record's noise does not depend on its position in the batch
    perm = np.random.default_rng(0).permutation(4000)
    a = _unlimited_release(x, np.arange(4000), seed=5)
    b = _unlimited_release(x, perm, seed=5)
    assert torch.equal(b.data, a.data[perm])
    # and distinct release ids give unrelated noise for the same seed
    c = _unlimited_release(x, np.arange(4000), seed=5, release_id="another")
    assert (c.data != a.data).float().mean() > 0.5


def test_a_seeded_release_by_several_workers_equals_the_one_process_release(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.random((300, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    whole = _unlimited_release(x, np.arange(300), epsilon=2.0, seed=42, release_id="train")
    shared = tmp_path / "shared.sqlite"
    PrivacyLedger(1e9, path=shared).close()
    # three worker processes, uneven batches of scrambled records, all at once
    order = rng.permutation(300)
    parts = [np.sort(order[:110]), order[110:250], order[250:]]
    procs = []
    for i, rows in enumerate(parts):
        np.save(tmp_path / f"ids{i}.npy", rows)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.ledger_worker",
                    "release",
                    str(shared),
                    "-",
                    "42",
                    "train",
                    str(tmp_path / "x.npy"),
                    str(tmp_path / f"ids{i}.npy"),
                    str(tmp_path / f"out{i}.npy"),
                ],
                cwd=ROOT,
                stderr=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
    got = np.zeros_like(x)
    for i, rows in enumerate(parts):
        got[rows] = np.load(tmp_path / f"out{i}.npy")
    assert np.array_equal(got, whole.data.numpy()), "bit for bit, whichever worker drew a record"
    ledger = PrivacyLedger(path=shared)
    eps, _ = ledger.spent_many(np.arange(300))
    assert (eps == 24.0).all() and len(ledger.releases) == 3


def test_large_batches_are_sealed_in_parallel_and_checked_by_chunk(monkeypatch):
    from noiseforge.ldp import seal as seal_module

    x = torch.rand(6000, 784)  # 18.8 MB: hashed by several workers
    assert x.numel() * 4 > seal_module._PARALLEL_BYTES
    batch = _unlimited_release(x, np.arange(6000), epsilon=7.0)
    rows = batch._seal.chunk_rows
    assert 6000 // rows > 8, "many chunks"
    monkeypatch.setattr(seal_module, "_PARALLEL_BYTES", 1 << 62)  # the same data, one thread
    serial = seal_module.seal(batch.data.clone(), batch.records, "x")
    assert serial._hashes == batch._seal._hashes, "the workers' chunk hashes are in order"
    batch.data[4321, 7] += 0.5
    first = (4321 // rows) * rows
    with pytest.raises(ReleaseIntegrityError, match=rf"rows {first}\.\."):
        batch._rows(4000, 4500)._verified()
    batch._rows(0, first)._verified()  # the chunks before it are intact
    with pytest.raises(ReleaseIntegrityError):
        query_cloud(InProcessCloud(torch.nn.Linear(784, 3)), batch, progress=False, retries=0)


def test_a_release_key_serves_one_release():
    ledger = PrivacyLedger(1e9)
    x = torch.rand(50, 6)
    key = ReleaseKey()
    kw = dict(epsilon=1.0, lower=0.0, upper=1.0, key=key, clamp=False)
    monday = release(x, np.arange(50), ledger, release_id="monday", **kw)
    with pytest.raises(ReleaseConflictError, match="already belongs to release 'monday'"):
        release(x + 0.1, np.arange(50), ledger, release_id="tuesday", **kw)
    # streams depend on the release id too: the same key and batch name elsewhere differ
    other = release(x, np.arange(50), PrivacyLedger(1e9), release_id="tuesday", **kw)
    assert (other.data != monday.data).float().mean() > 0.9


def test_a_forked_child_seals_large_batches_after_its_parent_did():
    import multiprocessing

    _unlimited_release(torch.rand(3000, 784), np.arange(3000))  # the parent's pool is started
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_release_in_child)
        assert result.get(timeout=60) == 3000, "the child's seal did not hang"


def _release_in_child():
    return len(_unlimited_release(torch.rand(3000, 784), np.arange(3000)))


# --------------------------------------------------------------------------- the noise as a value

SPEC_CASES = [
    pytest.param(dict(epsilon=2.0), Laplace(2.0), id="laplace"),
    pytest.param(
        dict(epsilon=1.0, mechanism="gaussian", delta=1e-5), Gaussian(1.0, 1e-5), id="gaussian"
    ),
    pytest.param(
        dict(epsilon=3.0, mechanism="discrete_laplace", levels=32),
        DiscreteLaplace(3.0, 32),
        id="discrete",
    ),
]


@pytest.mark.parametrize(("kwargs", "mechanism"), SPEC_CASES)
@pytest.mark.parametrize("unit", ["feature", "record"])
def test_a_spec_releases_and_charges_exactly_as_the_keywords(kwargs, mechanism, unit):
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(8))
    upper = np.array([1.0, 2.0, 1.0, 3.0])
    spec = NoiseSpec(mechanism, lower=0.0, upper=upper, unit=unit)
    by_keywords_ledger, by_spec_ledger = PrivacyLedger(1e6, 0.5), PrivacyLedger(1e6, 0.5)
    old = release(
        x,
        np.arange(6),
        by_keywords_ledger,
        lower=0.0,
        upper=upper,
        unit=unit,
        seed=5,
        release_id="r",
        **kwargs,
    )
    new = release(x, np.arange(6), by_spec_ledger, spec, seed=5, release_id="r")
    assert torch.equal(old.data, new.data) and old.digest == new.digest
    a, b = by_keywords_ledger.releases[0], by_spec_ledger.releases[0]
    assert (a.epsilon, a.delta, a.mechanism) == (b.epsilon, b.delta, b.mechanism)
    assert b.mechanism == mechanism.name
    assert by_keywords_ledger.spent(3) == by_spec_ledger.spent(3)
    assert new.calibration.epsilon_total == old.calibration.epsilon_total == b.epsilon
    # layer 2 with the same spec: the keyword form's copies, bit for bit, still free
    # (a seed's stream continues from call to call: each form starts it afresh)
    seed = 9
    nf_random._seeded.pop(seed, None)
    more_old = add_noise_copies(old, 3, lower=0.0, upper=upper, unit=unit, seed=seed, **kwargs)
    nf_random._seeded.pop(seed, None)
    more_new = add_noise_copies(new, 3, spec, seed=seed)
    assert torch.equal(more_old.data, more_new.data)
    assert (
        by_spec_ledger.spent(3) == by_keywords_ledger.spent(3) and len(by_spec_ledger.releases) == 1
    )


def test_a_spec_beside_noise_keywords_is_refused_before_the_ledger_is_touched():
    x = torch.rand(3, 2)
    ledger = PrivacyLedger(10.0)
    spec = NoiseSpec(Laplace(1.0))
    with pytest.raises(TypeError, match=r"release got noise= and epsilon=.*not both"):
        release(x, [0, 1, 2], ledger, spec, epsilon=0.1)
    with pytest.raises(TypeError, match=r"unit=.*not both"):
        release(x, [0, 1, 2], ledger, noise=spec, unit="feature")
    with pytest.raises(TypeError, match=r"release needs noise= .*missing: epsilon, lower, upper"):
        release(x, [0, 1, 2], ledger)
    with pytest.raises(TypeError, match="noise must be a noiseforge"):
        release(x, [0, 1, 2], ledger, 1.0)
    assert ledger.releases == [] and ledger.spent(0) == (0.0, 0.0)
    batch = release(x, [0, 1, 2], ledger, spec, seed=1)
    with pytest.raises(TypeError, match="add_noise_copies got noise= and delta="):
        add_noise_copies(batch, 2, spec, delta=1e-5)
    with pytest.raises(TypeError, match="add_noise_copies needs noise="):
        add_noise_copies(batch, 2)


def test_a_released_batch_is_rebuilt_only_from_the_rows_the_ledger_bound(tmp_path):
    """released_batch(): the rows of a release, sent to another process as arrays,
    become a NoisedBatch again only when the ledger confirms every byte."""
    from noiseforge.ldp import released_batch

    ledger = PrivacyLedger(100.0, path=tmp_path / "l.sqlite")
    noise = NoiseSpec(Laplace(1.0), lower=0.0, upper=1.0)
    x = torch.rand(6, 4)
    out = release(x, np.arange(10, 16), ledger, noise, release_id="r", batch="b")
    data, records = out.data.numpy().copy(), out.records.numpy().copy()
    assert ledger.entry("r", "b").seq == out.release.seq and ledger.entry("r", "x") is None
    other = PrivacyLedger(path=tmp_path / "l.sqlite")  # another handle, as a worker has
    again = released_batch(other, "r", "b", data, records, noise)
    assert isinstance(again, NoisedBatch) and again.digest == out.digest
    assert torch.equal(again.data, out.data) and again.release.seq == out.release.seq
    cloud = InProcessCloud(torch.nn.Linear(4, 2))
    assert cloud.predict(again).shape == (6, 2)  # a rebuilt batch may be sent
    edited = data.copy()
    edited[2, 1] = np.nextafter(edited[2, 1], 2.0)
    for args, match in [
        (("r", "b", x.numpy(), records, noise), "not the rows the ledger says"),  # raw rows
        (("r", "b", edited, records, noise), "not the rows the ledger says"),  # one ulp
        (("r", "b", data[::-1].copy(), records[::-1].copy(), noise), "not the rows"),  # order
        (("r", "b", data, records + 1, noise), "not the records the ledger charged"),
        (("r", "nobody", data, records, noise), "never released"),
        (("r", "b", data, records, noise.replace(mechanism=Laplace(2.0))), "was charged eps"),
    ]:
        with pytest.raises(ReleaseIntegrityError, match=match):
            released_batch(other, *args)
    with pytest.raises(ValueError, match="one id per row"):
        released_batch(other, "r", "b", data, records[:3], noise)
    with pytest.raises(TypeError, match="NoiseSpec"):
        released_batch(other, "r", "b", data, records, {"epsilon": 1.0})
    with pytest.raises(TypeError, match="strings"):
        ledger.entry("r", 3)
