"""Recall/QPS of noiseforge's HNSW against hnswlib and faiss.IndexHNSWFlat, same run.

Data: embedding-like clustered vectors (a 32-d clustered latent space projected to
384-d plus noise, L2-normalised float32; default 100k x 384, 5k queries),
k = 10, M = 16, ef_construction = 200, the machine's threads. For each library
the build time is measured, then ef is swept (best of --repeat passes per ef) and the
QPS at the smallest ef that reaches each target recall@10 (0.95, 0.99) is reported,
with memory per vector. noiseforge runs twice: with its default SQ8 walk and with
the float32 walk (quantization="none").

    python benchmarks/hnsw_recall_qps.py [--n 100000] [--dim 384] [--queries 5000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
TARGETS = (0.95, 0.99)


def clustered(n, d, seed, clusters=100, latent=32):
    """Embedding-like vectors: clustered points of a low-dimensional latent space,
    projected to d dimensions with a little isotropic noise, L2-normalised."""
    rng = np.random.default_rng(seed)
    projection = np.random.default_rng(12345).normal(size=(latent, d))
    centers = np.random.default_rng(54321).normal(size=(clusters, latent))
    z = centers[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, latent))
    x = z @ projection + 5.0 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def exact_top10(x, q, chunk=1000):
    out = []
    for s in range(0, len(q), chunk):
        sc = q[s : s + chunk] @ x.T
        out.append(np.argpartition(-sc, 10, axis=1)[:, :10])
    return np.concatenate(out)


def recall(found, truth):
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True))
    return hits / truth.size


class NoiseforgeHNSW:
    def __init__(self, quantization="sq8"):
        self.quantization = quantization
        self.name = f"noiseforge ({quantization})"

    def build(self, x, threads):
        from noiseforge.index import HNSWIndex

        self.index = HNSWIndex(
            x.shape[1], metric="ip", M=16, ef_construction=200, quantization=self.quantization
        )
        self.index.add(x, num_threads=threads)

    def search(self, q, ef, threads):
        return self.index.search(q, 10, ef=ef, num_threads=threads)[0]

    def bytes_per_vector(self, n):
        return self.index.memory_bytes / n


class Hnswlib:
    name = "hnswlib"

    def build(self, x, threads):
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=x.shape[1])
        self.index.init_index(max_elements=len(x), M=16, ef_construction=200, random_seed=0)
        self.index.add_items(x, num_threads=threads)
        self.dim = x.shape[1]

    def search(self, q, ef, threads):
        self.index.set_ef(ef)
        return self.index.knn_query(q, k=10, num_threads=threads)[0]

    def bytes_per_vector(self, n):
        # data + level-0 links (2M + 1 ints) + label, as hnswlib allocates them
        return self.dim * 4 + (2 * 16 + 1) * 4 + 8


class Faiss:
    name = "faiss"

    def build(self, x, threads):
        import faiss

        faiss.omp_set_num_threads(threads)
        self.index = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 200
        self.index.add(x)
        self.dim = x.shape[1]

    def search(self, q, ef, threads):
        self.index.hnsw.efSearch = ef
        return self.index.search(q, 10)[1]

    def bytes_per_vector(self, n):
        return self.dim * 4 + 2 * 16 * 4 + 8


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=5_000)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3, help="search passes per ef (best kept)")
    p.add_argument(
        "--only", default="", help="comma-separated name prefixes, e.g. noiseforge,hnswlib"
    )
    args = p.parse_args()
    x = clustered(args.n, args.dim, seed=0)
    q = clustered(args.queries, args.dim, seed=1)
    truth = exact_top10(x, q)
    print(
        f"{args.n} x {args.dim} clustered unit vectors, {args.queries} queries, k=10, "
        f"M=16, ef_construction=200, {args.threads} threads"
    )
    rows = []
    libs = [NoiseforgeHNSW("sq8"), NoiseforgeHNSW("none"), Hnswlib(), Faiss()]
    if args.only:
        libs = [lib for lib in libs if any(lib.name.startswith(o) for o in args.only.split(","))]
    for lib in libs:
        try:
            t0 = time.perf_counter()
            lib.build(x, args.threads)
            build = time.perf_counter() - t0
        except ImportError as exc:
            print(f"{lib.name}: skipped ({exc})")
            continue
        curve = []
        for ef in EFS:
            dt = float("inf")
            for _ in range(args.repeat):  # best of a few passes: less noise from the machine
                t0 = time.perf_counter()
                ids = lib.search(q, ef, args.threads)
                dt = min(dt, time.perf_counter() - t0)
            curve.append((ef, recall(ids, truth), len(q) / dt))
        at = {}
        for target in TARGETS:
            hit = next(((ef, r, qps) for ef, r, qps in curve if r >= target), None)
            at[target] = hit
        rows.append((lib.name, build, lib.bytes_per_vector(args.n), at, curve))
    print(
        f"\n{'library':<20}{'build s':>9}{'bytes/vec':>11}"
        + "".join(f"{'QPS@' + str(t):>14}{'(ef, recall)':>16}" for t in TARGETS)
    )
    for name, build, bpv, at, _ in rows:
        line = f"{name:<20}{build:>9.1f}{bpv:>11.0f}"
        for t in TARGETS:
            hit = at[t]
            line += (
                f"{hit[2]:>14.0f}{f'({hit[0]}, {hit[1]:.3f})':>16}"
                if hit
                else f"{'n/a':>14}{'':>16}"
            )
        print(line)
    print("\nfull curves (ef: recall, QPS)")
    for name, _, _, _, curve in rows:
        print(name, "  ".join(f"{ef}: {r:.3f}, {qps:.0f}" for ef, r, qps in curve))


if __name__ == "__main__":
    main()
