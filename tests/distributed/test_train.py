"""Ray Train: a local model trained data parallel by two processes is the model one
process trains (up to float rounding), and bad arguments fail before any work."""

from __future__ import annotations

import pytest
import torch

from noiseforge.distributed import train_ray
from noiseforge.ldp.models import predict_labels, train_classifier
from tests.support.ldp_task import band_mlp, band_task


def _model() -> torch.nn.Module:
    torch.manual_seed(11)
    return band_mlp()


def test_two_processes_train_the_one_process_model(ray_cluster, tmp_path):
    x, y = band_task(500, seed=4)  # hard labels; 500 rows in batches of 64: a short last batch
    want = _model()
    train_classifier(want, x, y, epochs=2, batch_size=64, seed=5, schedule="cosine", progress=False)
    got = train_ray(
        _model(),
        x,
        y,
        workers=2,
        epochs=2,
        batch_size=64,
        seed=5,
        schedule="cosine",
        storage_path=tmp_path / "run",
    )
    assert not got.training  # returned in eval mode
    for name, value in want.state_dict().items():
        torch.testing.assert_close(got.state_dict()[name], value, rtol=0, atol=1e-5)
    assert torch.equal(predict_labels(got, x), predict_labels(want, x))
    assert (tmp_path / "run").is_dir()  # the caller's storage is kept


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(workers=0), "workers"),
        (dict(workers=1.5), "workers"),
        (dict(cpus_per_worker=0), "cpus_per_worker"),
        (dict(schedule="linear"), "schedule"),
    ],
)
def test_bad_arguments_fail_before_any_work(kwargs, match):
    x, y = band_task(10, seed=0)
    with pytest.raises(ValueError, match=match):
        train_ray(band_mlp(), x, y, **kwargs)


def test_mismatched_or_empty_inputs_fail_before_any_work():
    x, y = band_task(10, seed=0)
    with pytest.raises(ValueError, match="10 inputs but 9 targets"):
        train_ray(band_mlp(), x, y[:9])
    with pytest.raises(ValueError, match="nothing to train on"):
        train_ray(band_mlp(), x[:0], y[:0])
