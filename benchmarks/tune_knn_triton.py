"""Sweep the Triton exact top-k kernel's tile on a GPU and compare with the card's matmul.

The issue's target: the Triton `knn_topk` reaches at least 50 % of the card's
matmul throughput for Q = 10k queries, N = 1M corpus rows, d = 384. This script
measures, on the same card and inputs: torch's float32 and float64 matmul
(chunked Q x N products, the card's throughput), then the kernel for each tile
in TILES (set through $NOISEFORGE_KNN_TRITON, as noiseforge.ops.knn_topk reads
it), checks each tile's ids against the torch backend on the first queries,
and prints TFLOP/s and the ratio to float32 matmul. Put the best tile in
noiseforge.ops.knn_topk.TRITON_TILE.

    python benchmarks/tune_knn_triton.py [--q 10000] [--n 1000000] [--d 384] [--k 10]

(``TRITON_INTERPRET=1 python benchmarks/tune_knn_triton.py --device cpu --q 8 --n 300
--d 16`` runs the script's logic on the interpreter, for a smoke test without a GPU.)
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

import torch

# BLOCK_Q,BLOCK_N,BLOCK_D,WARPS[,SPLITS] (splits 0 or absent: about four programs per SM)
TILES = [
    "64,64,16,4",
    "64,64,32,4",
    "128,64,16,8",
    "64,128,32,8",
    "128,128,16,8",
    "32,64,16,4",
    "64,64,16,4,1",  # no corpus splits: one program per 64 queries
    "16,16,16,4,1",  # the kernel's first design: 16 queries x 16 rows, no splits
]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: str, repeat: int = 3) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--q", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--check", type=int, default=256, help="queries checked against torch")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiles", default="", help="';'-separated tiles instead of the list")
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script measures the GPU kernel")
    knn = importlib.import_module("noiseforge.ops.knn_topk")
    g = torch.Generator(device=dev).manual_seed(0)
    corpus = torch.nn.functional.normalize(
        torch.randn(args.n, args.d, device=dev, generator=g), dim=1
    )
    queries = torch.nn.functional.normalize(
        torch.randn(args.q, args.d, device=dev, generator=g), dim=1
    )
    flop = 2.0 * args.q * args.n * args.d
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU (Triton interpreter)"
    print(name, f"Q={args.q} N={args.n} d={args.d} k={args.k}")

    def matmul(dtype):
        qq, cc = queries.to(dtype), corpus.to(dtype)

        def run():
            for s in range(0, args.q, 2048):
                qq[s : s + 2048] @ cc.T

        return run

    peaks = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        t = _time(matmul(dtype), dev)
        peaks[name] = flop / t / 1e12
        print(f"torch matmul {name}: {t * 1e3:9.1f} ms  {peaks[name]:7.2f} TFLOP/s")
    ref = knn.knn_topk(queries[: args.check], corpus, args.k, metric="ip", backend="torch")
    for tile in args.tiles.split(";") if args.tiles else TILES:
        os.environ[knn.TRITON_TILE_ENV] = tile
        try:
            t0 = time.perf_counter()
            ids, _ = knn.knn_topk(
                queries[: args.check], corpus, args.k, metric="ip", backend="triton"
            )
            _sync(dev)
            first = time.perf_counter() - t0
            same = bool(torch.equal(ids, ref[0]))
            t = _time(
                lambda: knn.knn_topk(queries, corpus, args.k, metric="ip", backend="triton"), dev
            )
        except Exception as exc:  # one failing tile must not end the sweep
            print(f"triton tile {tile:>13}: failed: {type(exc).__name__}: {exc}"[:400])
            continue
        tflops = flop / t / 1e12
        print(
            f"triton tile {tile:>13}: {t * 1e3:9.1f} ms  {tflops:7.2f} TFLOP/s  "
            f"{tflops / peaks['float32']:5.2f}x float32 matmul  "
            f"(first call incl. compile {first:.1f} s; ids equal torch: {same})"
        )
    os.environ.pop(knn.TRITON_TILE_ENV, None)


if __name__ == "__main__":
    main()
