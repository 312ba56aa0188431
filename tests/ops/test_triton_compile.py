"""The compiled Triton path, checked without a GPU.

The interpreter tests check what the kernels compute; these compile each kernel
variant the launchers use for real targets (sm_80, sm_90) with Triton's bundled
``ptxas`` (tests/support/triton_compile_check.py, in a subprocess without the
interpreter) and check what the numerical contract needs from the generated
code: no FMA contraction and no approximate instructions in the noise kernel
(a control compiled with fusion on shows the check can fail), IEEE division and
square root where the kernel asks for them, integer atomics of the right width
in the histograms, float64 tensor-core MMAs in exact top-k, and shared memory
within each target's limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import triton_compile_check as tcc
from tests.support.backends import skip_or_fail

# Shared memory a block may use (bytes): A100 (sm_80) 163 KB, H100/H200 (sm_90) 227 KB.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
CASES = [(v[0], arch) for v in tcc.VARIANTS for arch in v[6]]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    try:
        import triton  # noqa: F401
    except ImportError:
        skip_or_fail("triton is not installed")
    out = tmp_path_factory.mktemp("triton") / "compiled.json"
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "tests" / "support" / "triton_compile_check.py"), str(out)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {(e["name"], e["arch"]): e for e in json.loads(out.read_text())}


def _ops(entry: dict, *fragments: str) -> dict[str, int]:
    return {op: n for op, n in entry["ops"].items() if any(f in op for f in fragments)}


@pytest.mark.parametrize(("name", "arch"), CASES, ids=[f"{n}-sm{a}" for n, a in CASES])
def test_variant_compiles_within_shared_memory(compiled, name, arch):
    entry = compiled[(name, arch)]
    assert entry["ok"], entry.get("error")
    assert entry["shared"] <= SHARED_LIMIT[arch], (name, arch, entry["shared"])


def _ldp_cases():
    return [c for c in CASES if c[0].startswith("ldp-") and "control" not in c[0]]


@pytest.mark.parametrize(
    ("name", "arch"), _ldp_cases(), ids=[f"{n}-sm{a}" for n, a in _ldp_cases()]
)
def test_noise_kernel_keeps_the_float32_contract(compiled, name, arch):
    entry = compiled[(name, arch)]
    assert entry["ok"], entry.get("error")
    # no float a*b+c contracted into one rounding (integer mad is fine), no
    # approximate division/sqrt/log/exp
    fused = {
        op: n
        for op, n in _ops(entry, "fma.", "mad.").items()
        if op.rsplit(".", 1)[-1] in ("f16", "bf16", "f32", "f64", "f16x2", "bf16x2")
    }
    assert not fused, fused
    assert not _ops(entry, ".approx", ".ftz"), _ops(entry, ".approx", ".ftz")
    # 32-bit index arithmetic unless the 64-bit path was asked for
    div64 = _ops(entry, "div.s64", "div.u64", "rem.s64", "rem.u64")
    assert bool(div64) == name.endswith("index64"), div64
    if "gaussian" in name:
        assert _ops(entry, "sqrt.rn.f32")  # erfinv's tail: IEEE square root
    if "discrete" in name:
        assert _ops(entry, "div.rn.f32")  # the grid index: IEEE division


def test_the_fma_check_can_fail(compiled):
    """Compiled with FP fusion on, the same kernel does contain FMAs."""
    entry = compiled[("ldp-laplace-f32-fused-control", 90)]
    assert entry["ok"], entry.get("error")
    assert _ops(entry, "fma.rn.f32")


@pytest.mark.parametrize("name", [v[0] for v in tcc.VARIANTS if v[0].startswith("scatter")])
def test_histogram_kernels_add_integers_atomically(compiled, name):
    entry = compiled[(name, 90)]
    assert entry["ok"], entry.get("error")
    width = "u32" if "-i32-counts" in name and name.count("i32") == 3 else "u64"
    adds = _ops(entry, "red.global", "atom.global")
    assert adds and all(op.endswith(f"add.{width}") for op in adds), adds
    assert not _ops(entry, ".f32", ".f64"), "fixed-point sums must stay integer"


@pytest.mark.parametrize("metric", [1, 2])
def test_exact_topk_uses_float64_tensor_cores(compiled, metric):
    entry = compiled[(f"knn-{metric}-kp16", 90)]
    assert entry["ok"], entry.get("error")
    assert _ops(entry, "mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64")


def test_compiled_topk_matches_the_launcher():
    import importlib

    knn = importlib.import_module("noiseforge.ops.knn_topk")
    assert tcc.KNN_MAX_KP == knn._TRITON_MAX_KP
    assert tcc.KNN_TILE == knn.TRITON_TILE
