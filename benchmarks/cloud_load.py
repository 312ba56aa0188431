"""Load test of ``noiseforge cloud serve``: throughput and latency under concurrent clients.

The server runs as its own process with the Fashion-MNIST CNN (an untrained SmallCNN:
a forward pass costs the same whatever the weights); a client process drives
``--clients`` threads, each on its own keep-alive connection, sending requests of
``--rows`` images (flat 784 float32 values) back to back for ``--seconds``. Each
answer is checked (status 200, one probability row per image, rows summing to 1);
resets, errors and lost answers are counted. Two configurations run alternately
``--repeat`` times in the same session:

- ``batched``: the defaults (concurrent requests share model calls of up to 1024 rows);
- ``per-request``: ``--max-batch-rows`` equal to the request size, so every request is
  its own model call -- what a plain endpoint that runs the model per request does.

Reports images/s and p50/p99 latency, median and range over the runs, and the ratio.

    python benchmarks/cloud_load.py [--clients 64] [--seconds 20] [--rows 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def fashion_cnn():
    """``--model benchmarks.cloud_load:fashion_cnn``: the served architecture, seeded."""
    import torch

    from noiseforge.ldp.models import SmallCNN

    torch.manual_seed(0)
    return SmallCNN()


def start_server(*flags: str) -> tuple[subprocess.Popen, str, int]:
    cmd = [sys.executable, "-m", "noiseforge", "cloud", "serve", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--model", "benchmarks.cloud_load:fashion_cnn", *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    found = re.search(r"at http://([\d.]+):(\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, found.group(1), int(found.group(2))


def drive(host: str, port: int, clients: int, seconds: float, rows: int) -> dict:
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(16):
        buf = io.BytesIO()
        np.save(buf, rng.random((rows, 784), dtype=np.float32))
        bodies.append(buf.getvalue())
    latencies: list[float] = []
    problems: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)
    headers = {"Content-Type": "application/octet-stream"}

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        start.wait()
        stop = time.monotonic() + seconds
        mine, bad = [], []
        i = k
        while time.monotonic() < stop:
            i = (i + 1) % len(bodies)
            t0 = time.monotonic()
            try:
                conn.request("POST", "/v1/predict", body=bodies[i], headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    bad.append(f"status {resp.status}")
                else:
                    probs = np.load(io.BytesIO(data))
                    if probs.shape != (rows, 10) or not np.allclose(probs.sum(1), 1, atol=1e-4):
                        bad.append(f"answer of shape {probs.shape}")
            except (OSError, http.client.HTTPException) as exc:
                bad.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
            mine.append(time.monotonic() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)
            problems.extend(bad)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    lat = np.array(latencies)
    return {
        "images_per_s": (len(lat) - len(problems)) * rows / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "requests": len(lat),
        "problems": problems,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rows", type=int, default=8, help="images per request")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    configs = {"batched": [], "per-request": ["--max-batch-rows", str(args.rows)]}
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for r in range(args.repeat):
        for name, flags in configs.items():
            proc, host, port = start_server(*flags)
            try:
                result = drive(host, port, args.clients, args.seconds, args.rows)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            runs[name].append(result)
            print(
                f"run {r + 1} {name:12s} {result['images_per_s']:8.0f} images/s  "
                f"p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                f"{result['requests']} requests, {len(result['problems'])} problems"
                + (f" ({sorted(set(result['problems']))[:3]})" if result["problems"] else ""),
                flush=True,
            )

    def summary(values: list[float], fmt: str) -> str:
        return f"{np.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    print(
        f"\n{args.clients} clients x {args.seconds:g} s, {args.rows} images per request, "
        f"{args.repeat} runs, {os.cpu_count()} CPU cores (clients and server share them)"
    )
    print(f"{'config':12s} {'images/s':>22s} {'p50 ms':>22s} {'p99 ms':>22s} problems")
    for name, results in runs.items():
        print(
            f"{name:12s} {summary([x['images_per_s'] for x in results], '.0f'):>22s} "
            f"{summary([x['p50_ms'] for x in results], '.1f'):>22s} "
            f"{summary([x['p99_ms'] for x in results], '.1f'):>22s} "
            f"{sum(len(x['problems']) for x in results)}"
        )
    ratios = [
        b["images_per_s"] / p["images_per_s"]
        for b, p in zip(runs["batched"], runs["per-request"], strict=True)
    ]
    print(f"batched / per-request throughput: {summary(ratios, '.2f')}x")


if __name__ == "__main__":
    main()
