"""`noiseforge cloud serve` and its client (the client's failure handling: test_ldp_query.py)."""

from __future__ import annotations

import numpy as np
import torch

from noiseforge.ldp import PrivacyLedger, release
from noiseforge.ldp.http import HTTPCloud


def test_cli_cloud_server_serves_the_cached_fashion_model(tmp_path, monkeypatch):
    """`noiseforge cloud serve` on a tiny generated Fashion-MNIST-format data set."""
    import argparse

    from noiseforge.ldp.serve_command import build_cloud_server
    from tests.support.idx import write_idx

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 8)):
        write_idx(
            tmp_path / f"{split}-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (n, 28, 28))
        )
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", 2049, np.arange(n) % 10)
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
