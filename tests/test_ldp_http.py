"""The HTTP cloud agrees with the in-process cloud and refuses what it should."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import torch

from noiseforge.ldp import InProcessCloud, PrivacyLedger, query_cloud, release
from noiseforge.ldp.http import CloudServer, HTTPCloud


@pytest.fixture
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def test_http_and_in_process_clouds_agree(model):
    batch = release(
        torch.rand(37, 6),
        np.arange(37),
        PrivacyLedger(100.0),
        epsilon=5.0,
        lower=0.0,
        upper=1.0,
        seed=2,
    )
    local = InProcessCloud(model).predict(batch)
    with CloudServer(model, name="toy") as server:
        client = HTTPCloud(server.url, timeout=10)
        assert client.health() == {"model": "toy", "protocol": 1}
        remote = query_cloud(client, batch, batch_size=10, progress=False)
        with pytest.raises(TypeError, match="refusing to send"):
            client.predict(torch.rand(2, 6))
        bad = urllib.request.Request(server.url + "/v1/predict", data=b"not numpy", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=10)
        assert err.value.code == 400
    torch.testing.assert_close(remote, local)


def test_a_dead_cloud_is_reported_after_retries(model, tmp_path):
    from noiseforge.ldp import CloudQueryError

    with CloudServer(model) as server:
        url = server.url
    batch = release(
        torch.rand(3, 6), np.arange(3), PrivacyLedger(100.0), epsilon=5.0, lower=0.0, upper=1.0
    )
    with pytest.raises(CloudQueryError, match="failed 2 times"):
        query_cloud(HTTPCloud(url, timeout=2), batch, retries=1, backoff=0.0, progress=False)


def test_cli_cloud_server_serves_the_cached_fashion_model(tmp_path, monkeypatch):
    """`noiseforge cloud serve` on a tiny generated Fashion-MNIST-format data set."""
    import argparse

    from noiseforge.cli import build_cloud_server
    from tests.test_registry_and_cli import _write_idx

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 8)):
        _write_idx(
            tmp_path / f"{split}-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (n, 28, 28))
        )
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", 2049, np.arange(n) % 10)
    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tmp_path))
    monkeypatch.setenv("NOISEFORGE_CACHE", str(tmp_path / "cache"))
    server = build_cloud_server(argparse.Namespace(model="fashion-cnn", host="127.0.0.1", port=0))
    with server:
        batch = release(
            torch.rand(5, 784), np.arange(5), PrivacyLedger(1e6), epsilon=7.0, lower=0.0, upper=1.0
        )
        probs = HTTPCloud(server.url, timeout=10).predict(batch)
    assert probs.shape == (5, 10)
    assert list((tmp_path / "cache").glob("fashion-cnn-*.pt")), "the trained model is cached"
