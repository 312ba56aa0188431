"""Vote histograms vs torch.bincount and index_put_(accumulate=True), and soft-label
sums vs index_add_, same run.

The issue's shape: 8M answers, N = 1M inputs, C = 10 classes, int64 index and
labels. Two index patterns: "grouped" (answers of an input are adjacent, as
LDPKiT produces them: K = 8 copies per input) and "random".
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.backends import fast_backends, skip_unless_runs
from noiseforge.ops import aggregate_labels, soft_label_sum, vote_histogram

M, N, C = 8_000_000, 1_000_000, 10


def _index(pattern: str, device: str, m: int, n: int, g: torch.Generator) -> torch.Tensor:
    """m answers of n inputs, m // n per input in input order, or uniform at random."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if pattern == "grouped":
        return torch.arange(n).repeat_interleave(m // n)
    return torch.randint(0, n, (m,), generator=g)


def _data(pattern: str, device: str):
    g = torch.Generator().manual_seed(0)
    index = _index(pattern, device, M, N, g)
    labels = torch.randint(0, C, (M,), generator=g)
    weights = torch.rand(M, generator=g)
    return index.to(device), labels.to(device), weights.to(device)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("pattern", ["grouped", "random"])
@pytest.mark.parametrize(("backend", "device"), fast_backends("vote_histogram"))
@pytest.mark.parametrize("weighted", [False, True], ids=["counts", "weighted"])
def test_noiseforge(benchmark, pattern, backend, device, weighted):
    skip_unless_runs("vote_histogram", backend, device)
    index, labels, weights = _data(pattern, device)
    w = weights if weighted else None
    benchmark.group = f"vote_histogram-{'weighted' if weighted else 'counts'}-{pattern}-{device}"
    benchmark.extra_info.update(elements=M)

    def run():
        vote_histogram(index, labels, N, C, weights=w, backend=backend)
        _sync(device)

    # eight warm-up calls: the first huge-page faults of a process can cost up to
    # ~2 ms per 2 MiB page (about 90 ms a call here, for the first ~6 calls; see
    # the README), a one-off that medians should not mix in
    benchmark.pedantic(run, rounds=10, warmup_rounds=8)


@pytest.mark.parametrize("pattern", ["grouped", "random"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("peer", ["bincount", "index_put"])
@pytest.mark.parametrize("weighted", [False, True], ids=["counts", "weighted"])
def test_torch_peer(benchmark, pattern, device, peer, weighted):
    index, labels, weights = _data(pattern, device)
    benchmark.group = f"vote_histogram-{'weighted' if weighted else 'counts'}-{pattern}-{device}"
    benchmark.extra_info.update(elements=M)
    ones = torch.ones(M, dtype=torch.int64, device=device)

    def run():
        if peer == "bincount":
            torch.bincount(
                index * C + labels, weights=weights if weighted else None, minlength=N * C
            ).view(N, C)
        else:
            h = torch.zeros((N, C), dtype=torch.float32 if weighted else torch.int64, device=device)
            h.index_put_((index, labels), weights if weighted else ones, accumulate=True)
        _sync(device)

    benchmark.pedantic(run, rounds=5, warmup_rounds=2)


# Soft labels (LDPKiT with probability answers): 2M answers of C = 10 class
# probabilities (80 MB), N = 250k inputs; the peer is index_add_ of the rows.
SM, SN = 2_000_000, 250_000


def _soft_data(pattern: str, device: str):
    g = torch.Generator().manual_seed(1)
    index = _index(pattern, device, SM, SN, g)
    probs = torch.softmax(torch.randn(SM, C, generator=g), dim=1)
    return index.to(device), probs.to(device)


@pytest.mark.parametrize("pattern", ["grouped", "random"])
@pytest.mark.parametrize(("backend", "device"), fast_backends("vote_histogram"))
def test_soft_noiseforge(benchmark, pattern, backend, device):
    skip_unless_runs("vote_histogram", backend, device)
    index, probs = _soft_data(pattern, device)
    benchmark.group = f"soft_label_sum-{pattern}-{device}"
    benchmark.extra_info.update(elements=SM * C)

    def run():
        soft_label_sum(index, probs, SN, backend=backend)
        _sync(device)

    benchmark.pedantic(run, rounds=10, warmup_rounds=8)


@pytest.mark.parametrize("pattern", ["grouped", "random"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_soft_torch_peer(benchmark, pattern, device):
    index, probs = _soft_data(pattern, device)
    benchmark.group = f"soft_label_sum-{pattern}-{device}"
    benchmark.extra_info.update(elements=SM * C)

    def run():
        torch.zeros((SN, C), device=device).index_add_(0, index, probs)
        _sync(device)

    benchmark.pedantic(run, rounds=5, warmup_rounds=2)


# The fused winner per input (label, top, share, margin) with many classes:
# 1M answers, N = 100k inputs, C = 1000 classes (a 800 MB int64 table for torch).
FM, FN, FC = 1_000_000, 100_000, 1000


def _fused_data(benchmark, pattern: str):
    g = torch.Generator().manual_seed(2)
    index = _index(pattern, "cpu", FM, FN, g)
    benchmark.group = f"aggregate_labels-{pattern}-cpu"
    benchmark.extra_info.update(elements=FM)
    return index, torch.randint(0, FC, (FM,), generator=g)


@pytest.mark.parametrize("pattern", ["grouped", "random"])
def test_fused_noiseforge(benchmark, pattern):
    index, labels = _fused_data(benchmark, pattern)
    benchmark.pedantic(
        lambda: aggregate_labels(index, FN, labels=labels, num_classes=FC, backend="cpu"),
        rounds=10,
        warmup_rounds=3,
    )


@pytest.mark.parametrize("pattern", ["grouped", "random"])
def test_fused_torch_peer(benchmark, pattern):
    index, labels = _fused_data(benchmark, pattern)

    def run():
        h = torch.bincount(index * FC + labels, minlength=FN * FC).view(FN, FC)
        top, label = h.max(dim=1)
        second = h.topk(2, dim=1).values[:, 1]
        total = h.sum(dim=1).float()
        return label, top, top.float() / total, (top - second).float() / total

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
