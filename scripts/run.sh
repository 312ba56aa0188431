#!/usr/bin/env bash
# One entry point for a fresh machine: sets everything up, then runs a job.
#   bash scripts/run.sh demo [args]   the main job on embedded default data
#   bash scripts/run.sh test [args]   the test suite (pytest args pass through)
#   bash scripts/run.sh bench [args]  the benchmarks (pytest-benchmark, then the HNSW recall/QPS table)
#   bash scripts/run.sh lint          ruff
#   bash scripts/run.sh wheels [cpu] [cuda] [sdist]   the release wheels (scripts/build_wheels.sh)
# The test job starts a throwaway PostgreSQL server on loopback for the ledger tests
# (or uses $NOISEFORGE_TEST_POSTGRES_URL).
# Set-up is idempotent: Debian packages (as root, or through sudo), a virtual
# environment in .venv, torch==2.13.0, and noiseforge built from source.
# NOISEFORGE_CUDA=AUTO|ON|OFF chooses whether the CUDA backend is compiled.
# NOISEFORGE_WHEEL=dist/noiseforge-*.whl installs that built wheel instead (into a fresh
# NOISEFORGE_VENV), and the test job then runs against the installed package with no
# compiler on PATH (what CI does: .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-test}"
shift || true

PY="${PYTHON:-python3}"
VENV="${NOISEFORGE_VENV:-.venv}"
TORCH_SPEC="${NOISEFORGE_TORCH:-torch==2.13.0}"
TRITON_SPEC="${NOISEFORGE_TRITON:-triton==3.9.0}"
WHEEL="${NOISEFORGE_WHEEL:-}"
EXTRAS="test,dev,plot,ldp-data,hf,postgres,serve,parquet,ray"

apt_install() {
  local missing=()
  [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
  # relevance translation backends: Apertium pairs (mode files) and FreeDict dictionaries
  command -v apertium >/dev/null || missing+=(apertium)
  for m in eng-spa:apertium-eng-spa spa-ita:apertium-spa-ita fr-es:apertium-fr-es; do
    [ -f "/usr/share/apertium/modes/${m%%:*}.mode" ] || missing+=("${m#*:}")
  done
  for d in eng-deu eng-ita eng-pol eng-ara fra-eng fra-deu fra-ita fra-pol spa-eng spa-deu; do
    [ -f "/usr/share/dictd/freedict-$d.index" ] || missing+=("dict-freedict-$d")
  done
  # Debian's own python3 needs these to create the venv and build the extension.
  "$PY" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
  "$PY" -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" 2>/dev/null || missing+=(python3-dev)
  command -v g++ >/dev/null || missing+=(g++)
  # the ledger tests' PostgreSQL server (started on loopback by the test job)
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "== installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup() {
  apt_install
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  local pip="$VENV/bin/python -m pip"
  $pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
  $VENV/bin/python -c "import torch" 2>/dev/null || { echo "== installing $TORCH_SPEC"; $pip install -q "$TORCH_SPEC"; }
  if [ -n "$WHEEL" ]; then
    [ -f "$WHEEL" ] || { echo "NOISEFORGE_WHEEL=$WHEEL: no such file (build one: bash scripts/build_wheels.sh cpu)" >&2; exit 2; }
    echo "== installing noiseforge from the wheel $WHEEL"
    # the wheel replaces any same-version build already in the venv; then only its extras
    $pip install -q --force-reinstall --no-deps "$WHEEL"
    $pip install -q "$TRITON_SPEC" "$WHEEL[$EXTRAS]"
  else
    echo "== building and installing noiseforge (NOISEFORGE_CUDA=${NOISEFORGE_CUDA:-AUTO})"
    $pip install -q "$TRITON_SPEC" ".[$EXTRAS]"
  fi
}

# The installed wheel must need no compiler: a PATH of the venv's bin folder and one folder of
# links to the commands of $PATH's folders, less the C/C++/CUDA compilers, linkers,
# assemblers and build tools (tests/conftest.py checks that none is found). Prints the PATH.
compiler_free_path() {
  local dir d f name
  dir="$(mktemp -d /tmp/noiseforge-nocc.XXXXXX)"
  IFS=: read -ra dirs <<<"$PATH"
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
      name="${f##*/}"
      case "$name" in
        cc | c++ | cpp | gcc | g++ | gcc-* | g++-* | *-gcc | *-gcc-* | *-g++ | *-g++-* | *-cc | *-c++ | \
          clang | clang++ | clang-* | nvcc | ld | ld.* | *-ld | *-ld.* | as | *-as | \
          cmake | ninja | make | tcc | c89 | c99 | cc1*) continue ;;
      esac
      [ -e "$dir/$name" ] || ln -s "$f" "$dir/$name"
    done
  done
  echo "$(cd "$VENV/bin" && pwd):$dir"
}

# The ledger tests run against a real PostgreSQL server: use $NOISEFORGE_TEST_POSTGRES_URL
# if set, else start a throwaway one on 127.0.0.1 for this run (stopped on exit).
start_test_postgres() {
  [ -n "${NOISEFORGE_TEST_POSTGRES_URL:-}" ] && return 0
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { echo "== no PostgreSQL binaries: its ledger tests skip"; return 0; }
  PG_DIR="$(mktemp -d /tmp/noiseforge-pg.XXXXXX)"
  NOISEFORGE_TEST_POSTGRES_URL="$(bash scripts/postgres.sh start "$PG_DIR")"
  export NOISEFORGE_TEST_POSTGRES_URL
  trap 'bash scripts/postgres.sh stop "$PG_DIR" || true; rm -rf "$PG_DIR"' EXIT
  echo "== PostgreSQL for the ledger tests at $NOISEFORGE_TEST_POSTGRES_URL"
}

case "$job" in
  demo)
    setup
    exec "$VENV/bin/noiseforge" demo "$@"
    ;;
  test)
    setup
    start_test_postgres
    # Two pytest-xdist workers by default (NOISEFORGE_TEST_WORKERS; 0 runs one process): a
    # module's tests stay on one worker (tests/conftest.py). Passive OpenMP waits keep two
    # workers' thread pools from spinning against each other on shared cores. The Ray tests
    # (tests/distributed) then run alone: their 2-CPU Ray instance slows down several-fold
    # when another worker shares the cores. Given pytest arguments, one run does what they say.
    workers="${NOISEFORGE_TEST_WORKERS:-2}"
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
    runner=("$VENV/bin/python" -m pytest -q)
    NOCC=""
    if [ -n "$WHEEL" ]; then
      # tests/conftest.py checks both: noiseforge is the installed copy and no compiler is found
      NOCC="$(compiler_free_path)"
      echo "== testing the installed wheel with PATH=$NOCC (no compilers)"
      runner=(env -u CC -u CXX -u CUDACXX PATH="$NOCC" NOISEFORGE_TEST_INSTALLED=1 "${runner[@]}")
    fi
    rc=0
    if [ "$workers" = "0" ]; then
      "${runner[@]}" tests "$@" || rc=$?
    elif [ $# -gt 0 ]; then
      "${runner[@]}" -n "$workers" --dist loadscope tests "$@" || rc=$?
    else
      "${runner[@]}" -n "$workers" --dist loadscope --ignore=tests/distributed tests || rc=$?
      echo "== the Ray tests, alone"
      "${runner[@]}" tests/distributed || rc=$?
    fi
    [ -z "$NOCC" ] || rm -rf "${NOCC#*:}"
    exit "$rc"
    ;;
  bench)
    setup
    start_test_postgres
    "$VENV/bin/python" -m pip install -q ".[bench]"
    "$VENV/bin/python" -m pytest benchmarks --benchmark-enable --benchmark-json=bench.json -q "$@"
    "$VENV/bin/python" benchmarks/report.py bench.json
    exec "$VENV/bin/python" benchmarks/hnsw_recall_qps.py
    ;;
  wheels)
    # the release wheels into dist/ (scripts/build_wheels.sh [cpu] [cuda] [sdist])
    apt_install
    exec bash scripts/build_wheels.sh "$@"
    ;;
  lint)
    setup
    exec "$VENV/bin/ruff" check python tests benchmarks examples
    ;;
  *)
    echo "usage: bash scripts/run.sh demo|test|bench|lint|wheels [args]" >&2
    exit 2
    ;;
esac
