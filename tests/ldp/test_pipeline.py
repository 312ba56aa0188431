"""LDPKiT end to end on a small generated task: the ledger is charged once per
input, the cloud only ever sees noised rows, and the local model beats the
standard eps-LDP baseline at the same epsilon."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from noiseforge.ldp import (
    Gaussian,
    InProcessCloud,
    NoiseSpec,
    PrivacyLedger,
    ldpkit,
    standard_ldp,
)
from noiseforge.ldp.models import train_classifier
from noiseforge.ops import ldp_noise_calibration
from tests.support.ldp_task import band_mlp, band_task


class CountingCloud(InProcessCloud):
    def __init__(self, module):
        super().__init__(module)
        self.rows = 0

    def _predict(self, data):
        self.rows += data.shape[0]
        return super()._predict(data)


@pytest.fixture(scope="module")
def cloud_model():
    x, y = band_task(3000, seed=0)
    model = band_mlp()
    train_classifier(model, x, y, epochs=5, batch_size=64, progress=False)
    return model


def test_ldpkit_beats_standard_ldp_at_the_same_epsilon(cloud_model):
    x, y = band_task(2000, seed=1)
    noise = NoiseSpec(epsilon=0.5)  # per pixel: very noisy releases
    cloud = CountingCloud(cloud_model)
    std_ledger, kit_ledger = PrivacyLedger(8.0), PrivacyLedger(8.0)
    std = standard_ldp(x, np.arange(2000), cloud, std_ledger, noise, seed=3, progress=False)
    cloud.rows = 0
    kit = ldpkit(
        x,
        np.arange(2000),
        cloud,
        kit_ledger,
        noise,
        band_mlp,
        noise_copies=2,
        superimposed=1.0,
        epochs=6,
        seed=4,
        progress=False,
        release_id="kit-test",
    )
    std_acc = float((std == y).float().mean())
    kit_acc = float((kit.predictions == y).float().mean())
    assert kit_acc > std_acc + 0.05, (kit_acc, std_acc)
    # privacy bookkeeping: one charge of 16 x 0.5 per input, never more
    assert kit_ledger.spent(7) == (8.0, 0.0) and len(kit_ledger.releases) == 1
    assert kit_ledger.releases[0].release_id == "kit-test" == kit.released.release.release_id
    assert cloud.rows == kit.queries == 2000 * 4  # released + 2 copies + 2000 mixtures
    assert kit.aggregated.shape == (2000, 3)
    torch.testing.assert_close(kit.aggregated.sum(1), torch.ones(2000), rtol=1e-5, atol=1e-5)


def test_ldpkit_refuses_a_second_release_and_bad_options(cloud_model):
    x, _ = band_task(50, seed=2)
    ledger = PrivacyLedger(8.0)
    cloud = InProcessCloud(cloud_model)
    ldpkit(
        x,
        np.arange(50),
        cloud,
        ledger,
        NoiseSpec(epsilon=0.5),
        band_mlp,
        epochs=1,
        targets="aggregated",
        progress=False,
    )
    from noiseforge.ldp import BudgetExceededError

    with pytest.raises(BudgetExceededError):
        standard_ldp(x, np.arange(50), cloud, ledger, NoiseSpec(epsilon=0.5), progress=False)
    with pytest.raises(ValueError, match="targets must be"):
        ldpkit(
            x, np.arange(100, 150), cloud, ledger, NoiseSpec(epsilon=0.5), band_mlp, targets="votes"
        )


def test_the_pipeline_passes_its_noise_spec_as_one_value(cloud_model):
    """standard_ldp and ldpkit hand the spec itself to release and add_noise_copies (no
    deprecated kwargs()), and the ledger charges what the spec's calibration says."""
    x, _ = band_task(40, seed=5)
    spec = NoiseSpec(Gaussian(0.5, 1e-6), lower=0.0, upper=1.0)
    ledger = PrivacyLedger(100.0, 0.5)
    cloud = InProcessCloud(cloud_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        labels = standard_ldp(x, np.arange(40), cloud, ledger, spec, seed=3, progress=False)
        kit = ldpkit(
            x,
            np.arange(100, 140),
            cloud,
            ledger,
            spec,
            band_mlp,
            noise_copies=1,
            superimposed=0.0,
            epochs=1,
            seed=4,
            progress=False,
        )
    want = ldp_noise_calibration(x, spec)
    assert labels.shape == (40,) and kit.queries == 80
    assert ledger.spent(0) == ledger.spent(100) == (want.epsilon_total, want.delta_total)
    assert [r.mechanism for r in ledger.releases] == ["gaussian", "gaussian"]
    assert kit.released.calibration.mechanism == "gaussian"
