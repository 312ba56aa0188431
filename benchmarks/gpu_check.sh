#!/usr/bin/env bash
# On a GPU machine without internet whose image already has torch, triton,
# pybind11, scikit-build-core, cmake and ninja: build with CUDA (no isolation),
# run the CUDA and compiled-Triton tests strictly, then the GPU benchmarks and the
# exact top-k tile sweep. Each stage runs even when an earlier one failed; the exit
# status says whether all passed. Results go to $OUT when it is set (the device
# tool's output folder), else to the current folder.
#   bash benchmarks/gpu_check.sh [--no-build]
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DEST="${OUT:-.}"
status=0
stage() {  # stage NAME CMD...: run, log to $DEST/NAME.log, remember a failure
  local name="$1"
  shift
  echo "== $name: $*"
  if ! "$@" 2>&1 | tee "$DEST/$name.log"; then
    echo "== $name FAILED"
    status=1
  fi
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ "${1:-}" != "--no-build" ]; then
  stage build env NOISEFORGE_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps -q .
fi
export TRITON_INTERPRET=0
stage info "$PY" -m noiseforge info
# Every GPU backend must run: a skip is a failure here.
stage gpu-tests env NOISEFORGE_STRICT=1 "$PY" -m pytest tests -m gpu -q -p no:cacheprovider
stage gpu-bench "$PY" -m pytest benchmarks -k "cuda" --benchmark-enable \
  --benchmark-json="$DEST/gpu-bench.json" -q -p no:cacheprovider
stage gpu-report "$PY" benchmarks/report.py "$DEST/gpu-bench.json" \
  --bandwidth-gbs "$("$PY" benchmarks/stream.py cuda)"
# The exact top-k kernel's tile sweep against the card's matmul (target: >= 0.5x float32).
stage knn-tiles "$PY" benchmarks/tune_knn_triton.py
exit $status
