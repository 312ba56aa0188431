"""A quick memory-bandwidth probe (a torch copy, read + write), to express the
op's throughput as a fraction of what the machine can move."""

from __future__ import annotations

import time

import torch


def copy_bandwidth_gbs(device: str = "cpu", mib: int = 512) -> float:
    n = mib * 1024 * 1024 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n * 4 / best / 1e9


if __name__ == "__main__":
    import sys

    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    print(f"{copy_bandwidth_gbs(dev):.1f}")
