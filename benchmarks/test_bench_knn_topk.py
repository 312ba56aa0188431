"""Exact top-k: noiseforge backends against plain torch (matmul + topk), same run.

CPU: Q = 256 queries, N = 50k corpus, d = 384, k = 10. GPU (the issue's shape):
Q = 10k, N = 1M, d = 384 (skipped without a CUDA device).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.backends import fast_backends, skip_unless_runs
from noiseforge.ops import knn_topk

SHAPES = {"cpu": (256, 50_000, 384), "cuda": (10_000, 1_000_000, 384)}
K = 10


def _data(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    q, n, d = SHAPES[device]
    g = torch.Generator().manual_seed(0)
    corpus = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
    queries = torch.nn.functional.normalize(torch.randn(q, d, generator=g), dim=1).to(device)
    return queries, corpus


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize(("backend", "device"), fast_backends("knn_topk"))
def test_noiseforge(benchmark, backend, device):
    skip_unless_runs("knn_topk", backend, device)
    queries, corpus = _data(device)
    benchmark.group = f"knn_topk-{device}"
    q, n, _d = SHAPES[device]
    benchmark.extra_info.update(elements=q * n)

    def run():
        knn_topk(queries, corpus, K, metric="ip", backend=backend)
        _sync(device)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_torch_peer(benchmark, device, precision):
    """``(queries @ corpus.T).topk(k)`` in chunks; float64 is the precision noiseforge ranks in."""
    queries, corpus = _data(device)
    benchmark.group = f"knn_topk-{device}"
    q, n, _d = SHAPES[device]
    benchmark.extra_info.update(elements=q * n)
    dtype = torch.float64 if precision == "float64" else torch.float32
    qq, cc = queries.to(dtype), corpus.to(dtype)

    def run():
        for s in range(0, q, 1024):
            (qq[s : s + 1024] @ cc.T).topk(K, dim=1)
        _sync(device)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
