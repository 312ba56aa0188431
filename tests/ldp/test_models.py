"""LDPKiT models: the training loop learns hard and soft targets; trained models are cached."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from noiseforge.ldp.models import SmallCNN, accuracy, cached_model, train_classifier
from tests.support.faults import DiskFull


def _toy(n=400, seed=0):
    """Two classes of 28x28 images: bright left half vs bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 28, 28, generator=g) * 0.3
    x[y == 0, :, :14] += 0.7
    x[y == 1, :, 14:] += 0.7
    return x, y


def test_training_learns_hard_and_soft_targets():
    x, y = _toy()
    torch.manual_seed(0)
    hard = SmallCNN(num_classes=2)
    losses = train_classifier(hard, x, y, epochs=2, batch_size=64, progress=False)
    assert losses[-1] < losses[0] and accuracy(hard, x, y) > 0.95
    soft_targets = torch.nn.functional.one_hot(y, 2).float() * 0.8 + 0.1
    soft = SmallCNN(num_classes=2)
    train_classifier(
        soft, x.reshape(len(x), -1), soft_targets, epochs=2, batch_size=64, progress=False
    )
    assert accuracy(soft, x, y) > 0.95  # flat inputs are reshaped to images


def test_cached_model_trains_once(tmp_path):
    x, y = _toy(200)
    calls = []

    def train(model):
        calls.append(1)
        train_classifier(model, x, y, epochs=1, progress=False)

    a = cached_model(
        "toy", lambda: SmallCNN(num_classes=2), train, key="toy-v1", cache_dir=tmp_path
    )
    b = cached_model(
        "toy", lambda: SmallCNN(num_classes=2), train, key="toy-v1", cache_dir=tmp_path
    )
    assert len(calls) == 1
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    (next(tmp_path.glob("toy-*.pt"))).write_bytes(b"damaged")
    cached_model("toy", lambda: SmallCNN(num_classes=2), train, key="toy-v1", cache_dir=tmp_path)
    assert len(calls) == 2  # a damaged cache is retrained, not trusted


def test_a_failed_cache_write_leaves_no_partial_file_and_the_old_one_intact(tmp_path, monkeypatch):
    def cache():
        return cached_model(
            "toy", lambda: SmallCNN(num_classes=2), lambda m: None, key="k", cache_dir=tmp_path
        )

    cache()
    [path] = tmp_path.iterdir()
    plain = tmp_path.parent / f"{tmp_path.name}-plain"
    plain.write_bytes(b"")  # the permissions open() gives a new file under this umask
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    path.write_bytes(b"damaged")  # so the next call retrains and writes the cache again
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: DiskFull(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="No space left"):
        cache()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert path.read_bytes() == b"damaged"


def test_cosine_schedule_decays_the_learning_rate_to_zero():
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    model = torch.nn.Linear(4, 2)
    seen = []
    hook = register_optimizer_step_pre_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
    try:
        train_classifier(model, x, y, epochs=2, batch_size=16, schedule="cosine", progress=False)
    finally:
        hook.remove()
    assert len(seen) == 8 and seen[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in itertools.pairwise(seen)) and seen[-1] < 1e-4
    with pytest.raises(ValueError, match="schedule must be"):
        train_classifier(model, x, y, schedule="step", progress=False)
