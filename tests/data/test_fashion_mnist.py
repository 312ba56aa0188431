"""The Fashion-MNIST loader, on generated idx files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from noiseforge.data import DatasetNotFoundError, load_fashion_mnist


def test_loader_reads_idx_files(tiny_fashion):
    x, y = load_fashion_mnist("test", root=tiny_fashion)
    assert x.shape == (12, 28, 28) and x.dtype == np.uint8 and x.flags.writeable
    assert y.tolist() == [i % 10 for i in range(12)]
    x, y = load_fashion_mnist("train", root=tiny_fashion, limit=5)
    assert len(x) == len(y) == 5


def test_loader_errors(tiny_fashion, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("valid", root=tiny_fashion)
    bad = tiny_fashion / "t10k-images-idx3-ubyte.gz"
    data = gzip.open(bad).read()
    with gzip.open(bad, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist("test", root=tiny_fashion)
