#!/usr/bin/env bash
# On a GPU machine without internet whose image already has torch, triton,
# pybind11, scikit-build-core, cmake and ninja: build with CUDA (no isolation),
# run the CUDA and compiled-Triton tests strictly, then the GPU benchmarks.
#   bash benchmarks/gpu_check.sh            (writes gpu-bench.json and prints ratios)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
NOISEFORGE_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps -q .
export TRITON_INTERPRET=0
"$PY" -m noiseforge info
# Every GPU backend must run: a skip is a failure here.
NOISEFORGE_STRICT=1 "$PY" -m pytest tests -m gpu -q -p no:cacheprovider
"$PY" -m pytest benchmarks -k "cuda" --benchmark-enable --benchmark-json=gpu-bench.json -q -p no:cacheprovider
"$PY" benchmarks/report.py gpu-bench.json --bandwidth-gbs "$("$PY" benchmarks/stream.py cuda)"
# The exact top-k kernel's tile sweep against the card's matmul (issue target: >= 0.5x float32).
"$PY" benchmarks/tune_knn_triton.py
