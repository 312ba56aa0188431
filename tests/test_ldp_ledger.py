"""LDPKiT foundations: the privacy ledger refuses over-budget releases, release()
charges before noise, and the cloud refuses un-noised data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noiseforge.ldp import (
    BudgetExceededError,
    InProcessCloud,
    NoisedBatch,
    PrivacyLedger,
    release,
)


def test_ledger_composes_and_refuses_over_budget_atomically():
    ledger = PrivacyLedger(epsilon_budget=10.0)
    ledger.charge([1, 2, 3], 4.0)
    ledger.charge([2, 3], 4.0)
    assert ledger.spent(2) == (8.0, 0.0) and ledger.spent(1) == (4.0, 0.0)
    with pytest.raises(BudgetExceededError, match=r"record 2 has spent epsilon=8.*budget"):
        ledger.charge([1, 2], 4.0)
    assert ledger.spent(1) == (4.0, 0.0), "a refused release must charge nobody"
    ledger.charge([1], 6.0)  # exactly the budget is allowed
    assert ledger.remaining(1) == (0.0, 0.0)


def test_ledger_delta_budget_and_bad_charges():
    ledger = PrivacyLedger(epsilon_budget=5.0, delta_budget=1e-5)
    ledger.charge([0], 1.0, 1e-6)
    with pytest.raises(BudgetExceededError):
        ledger.charge([0], 1.0, 1e-5)
    with pytest.raises(ValueError, match="twice"):
        ledger.charge([3, 3], 1.0)
    with pytest.raises(ValueError, match="epsilon must be"):
        ledger.charge([4], -1.0)
    with pytest.raises(BudgetExceededError):
        PrivacyLedger(epsilon_budget=1.0).charge([0], 0.5, 1e-9)  # delta with a pure-DP budget
    with pytest.raises(ValueError, match="epsilon_budget"):
        PrivacyLedger(epsilon_budget=0)


def test_ledger_journal_survives_a_restart(tmp_path):
    path = tmp_path / "ledger.jsonl"
    first = PrivacyLedger(epsilon_budget=3.0, path=path)
    first.charge([7, 8], 2.0, mechanism="laplace", note="layer 1")
    again = PrivacyLedger(epsilon_budget=3.0, path=path)
    assert again.spent(7) == (2.0, 0.0) and len(again.releases) == 1
    with pytest.raises(BudgetExceededError):
        again.charge([8], 2.0)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"ledger\.jsonl:1"):
        PrivacyLedger(epsilon_budget=3.0, path=path)


def test_release_charges_the_total_of_all_features_and_refuses_a_second_release():
    x = torch.rand(5, 4)
    ledger = PrivacyLedger(epsilon_budget=10.0)
    batch = release(x, np.arange(5), ledger, epsilon=2.0, lower=0.0, upper=1.0, seed=1)
    assert isinstance(batch, NoisedBatch) and batch.data.shape == (5, 4)
    assert ledger.spent(0) == (8.0, 0.0)  # 4 features x eps 2 (basic composition)
    assert not torch.equal(batch.data, x)
    with pytest.raises(BudgetExceededError):
        release(x, np.arange(5), ledger, epsilon=2.0, lower=0.0, upper=1.0)
    with pytest.raises(ValueError, match="3 ids for 5 inputs"):
        release(x, [0, 1, 2], ledger, epsilon=0.1, lower=0.0, upper=1.0)


def test_cloud_refuses_raw_data_and_answers_noised_batches():
    cloud = InProcessCloud(torch.nn.Linear(4, 3), batch_size=2)
    raw = torch.rand(5, 4)
    with pytest.raises(TypeError, match="refusing to send Tensor"):
        cloud.predict(raw)
    with pytest.raises(TypeError, match=r"created by noiseforge\.ldp\.release"):
        NoisedBatch(raw, torch.arange(5), None, None)
    batch = release(raw, np.arange(5), PrivacyLedger(100.0), epsilon=5.0, lower=0.0, upper=1.0)
    probs = cloud.predict(batch)
    assert probs.shape == (5, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    derived = batch.derive(batch.data.flip(0), batch.records.flip(0))  # post-processing is free
    assert cloud.predict(derived).shape == (5, 3)


def test_layer_two_expansion_is_free_and_stays_in_the_domain():
    from noiseforge.ldp import add_noise_copies, concat, superimpose

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
    assert float(mixed.data.min()) >= 0.0 and float(mixed.data.max()) <= 1.0
    # each mixture is a convex combination of two released rows
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


class FlakyCloud:
    """An in-process cloud that fails on chosen calls (to test retries and resuming)."""

    def __init__(self, fail_calls):
        from noiseforge.ldp import InProcessCloud

        torch.manual_seed(0)
        self.inner = InProcessCloud(torch.nn.Linear(3, 4))
        self.fail_calls = set(fail_calls)
        self.calls = 0
        self.rows_seen = 0

    def predict(self, batch):
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("connection reset by peer")
        self.rows_seen += len(batch)
        return self.inner.predict(batch)


def test_query_cloud_retries_checkpoints_and_resumes(tmp_path):
    from noiseforge.ldp import CloudQueryError, query_cloud

    batch = release(
        torch.rand(10, 3),
        np.arange(10),
        PrivacyLedger(100.0),
        epsilon=5.0,
        lower=0.0,
        upper=1.0,
        seed=1,
    )
    want = FlakyCloud([]).inner.predict(batch)
    flaky = FlakyCloud([2])  # the second request fails once, then succeeds
    got = query_cloud(flaky, batch, batch_size=4, retries=2, backoff=0.0, progress=False)
    torch.testing.assert_close(got, want)
    ckpt = tmp_path / "answers.pt"
    dead = FlakyCloud([3, 4, 5])  # the third batch never succeeds
    with pytest.raises(CloudQueryError, match=r"rows 8\.\.9 .*8 answers are kept"):
        query_cloud(
            dead, batch, batch_size=4, retries=2, backoff=0.0, checkpoint=ckpt, progress=False
        )
    resumed = FlakyCloud([])
    got = query_cloud(resumed, batch, batch_size=4, backoff=0.0, checkpoint=ckpt, progress=False)
    torch.testing.assert_close(got, want)
    assert resumed.rows_seen == 2, "a resumed run asks only for the missing rows"
    other = release(
        torch.rand(3, 3), np.arange(20, 23), PrivacyLedger(100.0), epsilon=5.0, lower=0.0, upper=1.0
    )
    with pytest.raises(ValueError, match="holds answers for 10 rows"):
        query_cloud(resumed, other, checkpoint=ckpt, progress=False)
    with pytest.raises(TypeError, match="not raw data"):
        query_cloud(resumed, torch.rand(2, 3), progress=False)
