"""Raw Philox words vs torch's own generator and the pure-torch reference, same run.

Every fast backend of ``philox_words`` is timed against the peers measured in the
same run: ``torch.randint`` and ``torch.rand`` drawing the same number of 32-bit
words (what torch gives without a counter-based stream) and the plain-PyTorch
Philox of ``noiseforge.reference.philox`` (the ``torch`` backend).

Run: ``pytest benchmarks/test_bench_philox.py --benchmark-enable
--benchmark-json=bench.json`` then ``python benchmarks/report.py bench.json``.
``$NOISEFORGE_BENCH_PHILOX_COUNTERS`` sets the number of counters per call (four
words each; default: as many words as the noise benchmark draws elements).
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.backends import fast_backends, skip_unless_runs
from benchmarks.shapes import CPU_COPIES, CPU_SHAPE, GPU_COPIES, GPU_SHAPE
from noiseforge.ops import philox_words

SEED = 2024


def _counters(device: str) -> int:
    """Counters per call: one word per output element of the noise benchmark's shape."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    env = os.environ.get("NOISEFORGE_BENCH_PHILOX_COUNTERS")
    if env:
        return int(env)
    shape, copies = (CPU_SHAPE, CPU_COPIES) if device == "cpu" else (GPU_SHAPE, GPU_COPIES)
    return shape[0] * shape[1] * copies // 4


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize(("backend", "device"), fast_backends("philox_words"))
def test_noiseforge(benchmark, backend, device):
    skip_unless_runs("philox_words", backend, device)
    count = _counters(device)
    benchmark.group = f"philox_words-{device}"
    # four int64 words out per counter (and the int32 words the kernels write first)
    benchmark.extra_info.update(elements=4 * count, bytes=4 * count * (4 + 8))

    def run():
        philox_words(count, seed=SEED, device=device, backend=backend)
        _sync(device)

    benchmark.pedantic(run, rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("draw", ["randint", "rand", "reference"])
def test_torch_peer(benchmark, device, draw):
    count = _counters(device)
    benchmark.group = f"philox_words-{device}"
    benchmark.extra_info.update(elements=4 * count, bytes=4 * count * 4)
    g = torch.Generator(device=device).manual_seed(SEED)

    def run():
        if draw == "randint":  # 32-bit words: all of int32's range
            torch.randint(
                -(2**31), 2**31, (count, 4), dtype=torch.int32, device=device, generator=g
            )
        elif draw == "rand":  # one float32 uniform per word
            torch.rand((count, 4), device=device, generator=g)
        else:  # the same words from the plain-PyTorch Philox
            philox_words(count, seed=SEED, device=device, backend="torch")
        _sync(device)

    benchmark.pedantic(run, rounds=3 if draw == "reference" else 5, warmup_rounds=1)
