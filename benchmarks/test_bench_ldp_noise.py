"""LDP noise op vs the obvious PyTorch code, measured in the same run.

Run: ``pytest benchmarks/test_bench_ldp_noise.py --benchmark-enable
--benchmark-json=bench.json`` then ``python benchmarks/report.py bench.json``.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.backends import fast_backends, skip_unless_runs
from benchmarks.shapes import (
    CPU_COPIES,
    CPU_SHAPE,
    EPSILON,
    GPU_COPIES,
    GPU_SHAPE,
    torch_gaussian_peer,
    torch_laplace_peer,
)
from noiseforge.ops import ldp_noise
from noiseforge.ops.calibration import analytic_gaussian_sigma


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


CASES = fast_backends("ldp_noise")


def _x(device: str) -> tuple[torch.Tensor, int]:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    shape, copies = (CPU_SHAPE, CPU_COPIES) if device == "cpu" else (GPU_SHAPE, GPU_COPIES)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device), copies


@pytest.mark.parametrize(("backend", "device"), CASES)
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian", "discrete_laplace"])
def test_noiseforge(benchmark, backend, device, mechanism):
    skip_unless_runs("ldp_noise", backend, device)
    x, copies = _x(device)
    out = torch.empty((x.shape[0], copies, x.shape[1]), device=device)
    kw = {"delta": 1e-5} if mechanism == "gaussian" else {}
    benchmark.group = f"ldp_noise-{mechanism}-{device}"
    benchmark.extra_info.update(elements=out.numel(), bytes=x.numel() * 4 * (copies + 1))

    def run():
        ldp_noise(
            x,
            epsilon=EPSILON,
            lower=0.0,
            upper=1.0,
            mechanism=mechanism,
            copies=copies,
            out=out,
            backend=backend,
            **kw,
        )
        _sync(device)

    benchmark.pedantic(run, rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian", "discrete_laplace"])
def test_torch_peer(benchmark, device, mechanism):
    x, copies = _x(device)
    benchmark.group = f"ldp_noise-{mechanism}-{device}"
    benchmark.extra_info.update(elements=x.numel() * copies, bytes=x.numel() * 4 * (copies + 1))
    sigma = analytic_gaussian_sigma(EPSILON, 1e-5, 1.0)

    def run():
        if mechanism == "gaussian":
            torch_gaussian_peer(x, copies, sigma)
        else:  # the peer of both Laplace modes is plain float Laplace
            torch_laplace_peer(x, copies, EPSILON)
        _sync(device)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian", "discrete_laplace"])
def test_write_limit(benchmark, device, mechanism):
    """The physical limit in the same run: filling the (N, K, D) output with a
    constant (torch ``fill_``, all threads). The op's time over this one is the
    fraction of the fill bandwidth it reaches."""
    x, copies = _x(device)
    out = torch.empty((x.shape[0], copies, x.shape[1]), device=device)
    benchmark.group = f"ldp_noise-{mechanism}-{device}"
    benchmark.extra_info.update(elements=out.numel(), bytes=out.numel() * 4)

    def run():
        out.fill_(0.5)
        _sync(device)

    benchmark.pedantic(run, rounds=10, warmup_rounds=2)
