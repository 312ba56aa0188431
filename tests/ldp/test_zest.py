"""Zest model distance (LIME signatures) and the clean-query extraction baseline."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from noiseforge.ldp import InProcessCloud
from noiseforge.ldp.extraction import cloud_answers, extract_model
from noiseforge.ldp.models import SmallCNN, train_classifier
from noiseforge.ldp.zest import (
    METRICS,
    feature_segments,
    grid_segments,
    make_probe,
    normalized_zest_distance,
    signature_distance,
    zest_distance,
    zest_distances,
    zest_signature,
)
from tests.support.ldp_task import band_task  # the same 3-band task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def band_mlp():
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))


def _trained(seed):
    x, y = band_task(1500, seed=0)
    torch.manual_seed(seed)
    model = band_mlp()
    train_classifier(model, x, y, epochs=4, batch_size=64, seed=seed, progress=False)
    return model


@pytest.fixture(scope="module")
def models():
    a, b = _trained(1), _trained(2)
    noisy = copy.deepcopy(a)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(1e-4 * torch.randn(p.shape, generator=g))
    return {"a": a, "b": b, "a_noisy": noisy}


@pytest.fixture(scope="module")
def refs():
    return band_task(20, seed=9)[0]


def test_grid_and_feature_segments():
    assert grid_segments(4, 4, 2).reshape(4, 4).tolist() == [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 3, 3],
        [2, 2, 3, 3],
    ]
    # 5x5 with patch 2: 3x3 cells, the last row/column smaller; channels share cells
    seg = grid_segments(5, 5, 2, channels=2).reshape(2, 5, 5)
    assert int(seg.max()) == 8 and torch.equal(seg[0], seg[1]) and seg[0, 4, 4] == 8
    assert feature_segments(10, 3).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="groups"):
        feature_segments(4, 5)


def test_probe_is_seeded_and_keeps_the_reference_first(refs):
    p1, p2 = make_probe(refs, samples=64, seed=3), make_probe(refs, samples=64, seed=3)
    p3 = make_probe(refs, samples=64, seed=4)
    assert torch.equal(p1.masks, p2.masks) and not torch.equal(p1.masks, p3.masks)
    assert p1.masks.shape == (20, 64, 16)  # 16 features -> 16 groups of one
    assert bool(p1.masks[:, 0].all())
    x = p1.perturbed(2)
    assert torch.equal(x[0], refs[2])
    dropped = ~p1.masks[2, 1][p1.segments]
    assert torch.equal(x[1][dropped], p1.fill[dropped])
    assert torch.allclose(p1.fill, refs.mean(0))
    # images: default ~7x7 grid of patches
    img = make_probe(torch.rand(2, 1, 28, 28), samples=8)
    assert img.num_segments == 49 and img.perturbed(0).shape == (8, 1, 28, 28)


def test_distance_to_itself_is_zero_and_signatures_are_deterministic(models, refs):
    probe = make_probe(refs, samples=128, seed=0)
    s1, s2 = zest_signature(models["a"], probe), zest_signature(models["a"], probe)
    assert s1.shape == (20, 16, 3) and s1.dtype == torch.float64
    assert torch.equal(s1, s2)
    for metric in METRICS:
        assert zest_distance(models["a"], models["a"], refs, metric=metric, samples=128) == 0.0


def test_tiny_weight_noise_is_far_closer_than_an_independent_model(models, refs):
    d = zest_distances(models, [("a", "a_noisy"), ("a", "b")], refs, samples=128)
    for metric in METRICS:
        near, far = d[("a", "a_noisy")][metric], d[("a", "b")][metric]
        assert 0 < near < 0.05 * far, (metric, near, far)
    # normalised by an independently trained pair
    assert normalized_zest_distance(models["a"], models["b"], (models["a"], models["b"]), refs) == 1
    ratio = normalized_zest_distance(
        models["a"], models["a_noisy"], (models["a"], models["b"]), refs
    )
    assert 0 < ratio < 0.01


def test_metric_values_on_known_signatures():
    u = torch.tensor([[1.0, 0.0, 0.0]])
    v = torch.tensor([[0.0, 2.0, 0.0]])
    assert signature_distance(u, v, "cosine") == pytest.approx(1.0)
    assert signature_distance(u, -u, "cosine") == pytest.approx(2.0)
    assert signature_distance(u, v, "l1") == pytest.approx(3.0)
    assert signature_distance(u, v, "l2") == pytest.approx(math.sqrt(5))
    assert signature_distance(u, v, "linf") == pytest.approx(2.0)
    assert signature_distance(u, 3 * u, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_an_inprocess_cloud_and_a_callable_give_the_module_signature(models, refs):
    probe = make_probe(refs, samples=32)
    s = zest_signature(models["a"], probe)
    assert torch.equal(zest_signature(InProcessCloud(models["a"]), probe), s)
    assert torch.equal(zest_signature(lambda x: models["a"](x), probe), s)


def test_bad_inputs_raise(models, refs):
    with pytest.raises(ValueError, match="unknown metric"):
        zest_distance(models["a"], models["b"], refs, metric="l3")
    with pytest.raises(ValueError, match="references"):
        make_probe(torch.rand(16))
    with pytest.raises(ValueError, match="empty"):
        make_probe(torch.rand(0, 16))
    with pytest.raises(ValueError, match="input_shape"):
        make_probe(refs, input_shape=(1, 4, 5))
    with pytest.raises(ValueError, match="segments"):
        make_probe(refs, segments=torch.zeros(15, dtype=torch.int64))
    with pytest.raises(ValueError, match="without gaps"):
        make_probe(refs, segments=torch.tensor([0] * 8 + [2] * 8))
    with pytest.raises(ValueError, match="samples"):
        make_probe(refs, samples=1)
    with pytest.raises(ValueError, match="same probe"):
        signature_distance(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="all-zero"):
        signature_distance(torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(KeyError, match="not given"):
        zest_distances(models, [("a", "zz")], refs)
    with pytest.raises(TypeError, match="cannot query"):
        zest_signature(42, make_probe(refs, samples=4))
    with pytest.raises(ValueError, match="different seeds"):
        normalized_zest_distance(models["a"], models["b"], (models["a"], models["a"]), refs)


def test_extracted_model_agrees_with_the_cloud(models):
    cloud = InProcessCloud(models["a"])
    x, _ = band_task(1500, seed=3)
    stolen = extract_model(cloud, x, band_mlp, epochs=5, seed=0, progress=False)
    xt, _ = band_task(500, seed=4)
    agree = float((stolen(xt).argmax(1) == models["a"](xt).argmax(1)).float().mean())
    assert agree > 0.95, agree
    hard = extract_model(models["a"], x[:200], band_mlp, epochs=1, targets="hard", progress=False)
    assert isinstance(hard, torch.nn.Module)
    probs = cloud_answers(cloud, xt)
    assert probs.shape == (500, 3) and torch.allclose(probs.sum(1), torch.ones(500))
    with pytest.raises(ValueError, match="targets"):
        extract_model(cloud, x, band_mlp, targets="votes")
    with pytest.raises(ValueError, match="empty"):
        extract_model(cloud, x[:0], band_mlp)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        extract_model(object(), x, band_mlp)


def test_image_signature_with_a_cnn():
    torch.manual_seed(0)
    net = SmallCNN(num_classes=4, size=8)
    refs = torch.rand(3, 64)
    probe = make_probe(refs, input_shape=(1, 8, 8), samples=32)
    assert probe.num_segments == 16  # 2x2 patches of an 8x8 image
    assert zest_signature(net, probe).shape == (3, 16, 4)
