"""Compile every Triton kernel for real NVIDIA targets, without a GPU.

Triton compiles to PTX and runs its bundled ``ptxas`` for a target given
explicitly, so a machine with no GPU can still check the *compiled* path that
the interpreter tests never exercise: that each kernel variant the launchers
use compiles, what instructions it contains and how much shared memory it asks
for. Run as a script (``python tests/support/triton_compile_check.py OUT.json``) with
``TRITON_INTERPRET`` unset: under the interpreter ``@triton.jit`` gives
interpreted functions that cannot be compiled. ``tests/ops/test_triton_compile.py``
does that in a subprocess and checks the results.

``VARIANTS`` names each compiled variant: the kernel, its argument types and
constexprs as the launchers in ``noiseforge.ops`` pass them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

# (name, kernel module, kernel, signature, constexprs, compile options, archs)
_LDP_SIG = {
    "x_ptr": "*fp32",
    "out_ptr": "*fp32",
    "lower_ptr": "*fp32",
    "upper_ptr": "*fp32",
    "scale_ptr": "*fp32",
    "table_ptr": "*i64",
    "keys_ptr": "*i64",
    "total": "i64",
    "D": "i32",
    "K": "i32",
    "per_input": "i32",
    "table_len": "i32",
    "seed": "i64",
    "offset": "i64",
}
_LDP_CONST = ("MECHANISM", "CLAMP", "TABLE_BITS", "ROW_KEYS", "OUT_BF16", "BLOCK", "INDEX32")


def _launch_options() -> dict:
    """The compile options the noise launcher passes (ops/_backends.py)."""
    from noiseforge.ops._backends import triton_launch_options

    return triton_launch_options()


# The largest kernel width the knn launcher allows and its default GPU tile
# (kept in step with noiseforge.ops.knn_topk by tests/ops/test_triton_compile.py).
KNN_MAX_KP = 256
KNN_TILE = (64, 64, 16, 4, 0)


def _ldp(
    name,
    x,
    out,
    mechanism,
    clamp,
    bf16=False,
    total="i64",
    archs=(90,),
    fusion=False,
    index32=True,
    row_keys=False,
):
    sig = dict(_LDP_SIG, x_ptr=x, out_ptr=out, total=total)
    values = (mechanism, clamp, 13, row_keys, bf16, 1024, index32)
    const = dict(zip(_LDP_CONST, values, strict=True))
    opts = {"enable_fp_fusion": True} if fusion else None  # None: the launcher's options
    return (name, "ldp_noise", "ldp_noise_kernel", sig, const, opts, archs)


def _knn(metric, kp, archs=(90,), tile=None):
    sig = {
        "q_ptr": "*fp32",
        "c_ptr": "*fp32",
        "qn_ptr": "*fp64",
        "cn_ptr": "*fp64",
        "out_ptr": "*i64",
        "NQ": "i32",
        "N": "i32",
        "D": "i32",
        "ROWS_PER_SPLIT": "i32",
    }
    bq, bn, bd, warps = (tile or KNN_TILE)[:4]
    bn = max(bn, kp)
    if metric == 0:  # as the launcher: l2 differences in steps of 8 dimensions
        bd = 8
    if kp >= 128:  # as noiseforge.ops.knn_topk.triton_tile
        bq = min(bq, 16)
    const = {"METRIC": metric, "BLOCK_Q": bq, "BLOCK_N": bn, "KP": kp, "BLOCK_D": bd}
    name = f"knn-{metric}-kp{kp}" + (f"-tile{bq}x{bn}x{bd}w{warps}" if tile else "")
    return (name, "knn_topk", "knn_topk_kernel", sig, const, {"num_warps": warps}, archs)


def _scatter(index, labels, values, acc, has_values):
    sig = {
        "index_ptr": index,
        "labels_ptr": labels,
        "values_ptr": values,
        "acc_ptr": acc,
        "M": "i64",
        "C": "i32",
    }
    name = f"scatter-{index}-{labels}-{acc}-{'values' if has_values else 'counts'}"
    name = name.replace("*", "")
    const = {"HAS_VALUES": has_values, "BLOCK": 1024}
    return (name, "aggregate", "scatter_add_kernel", sig, const, {}, (90,))


VARIANTS = [
    _ldp("ldp-laplace-f32", "*fp32", "*fp32", 0, False, archs=(80, 90)),
    _ldp("ldp-laplace-f32-clamp", "*fp32", "*fp32", 0, True),
    _ldp("ldp-laplace-f32-total-i32", "*fp32", "*fp32", 0, False, total="i32"),
    _ldp("ldp-laplace-f32-index64", "*fp32", "*fp32", 0, False, index32=False),
    _ldp("ldp-laplace-f32-row-keys", "*fp32", "*fp32", 0, True, row_keys=True),
    _ldp("ldp-discrete-u8-row-keys-index64", "*u8", "*u8", 2, False, row_keys=True, index32=False),
    _ldp("ldp-laplace-f16", "*fp16", "*fp16", 0, True),
    _ldp("ldp-laplace-bf16", "*bf16", "*i16", 0, True, bf16=True),
    _ldp("ldp-laplace-u8", "*u8", "*fp32", 0, False),
    _ldp("ldp-gaussian-f32", "*fp32", "*fp32", 1, False, archs=(80, 90)),
    _ldp("ldp-gaussian-f32-clamp", "*fp32", "*fp32", 1, True),
    _ldp("ldp-gaussian-bf16", "*bf16", "*i16", 1, False, bf16=True),
    _ldp("ldp-discrete-f32", "*fp32", "*fp32", 2, False, archs=(80, 90)),
    _ldp("ldp-discrete-u8", "*u8", "*u8", 2, False),
    # a control: the same kernel with FP fusion on, which must contain FMAs
    _ldp("ldp-laplace-f32-fused-control", "*fp32", "*fp32", 0, True, fusion=True),
    (
        "philox-words",
        "philox",
        "philox_words_kernel",
        {"out_ptr": "*i32", "count": "i64", "seed": "i64", "offset": "i64"},
        {"BLOCK": 256},
        {},
        (80, 90),
    ),
    _scatter("*i64", "*i64", "*i64", "*i64", True),
    _scatter("*i64", "*i64", "*i64", "*i64", False),
    _scatter("*i32", "*i32", "*i32", "*i32", False),
    _scatter("*i64", "*i32", "*i64", "*i64", True),
    (
        "scatter-rows",
        "aggregate",
        "scatter_rows_kernel",
        {"index_ptr": "*i64", "values_ptr": "*i64", "acc_ptr": "*i64", "M": "i64", "C": "i32"},
        {"BLOCK_M": 64, "BLOCK_C": 16},
        {},
        (90,),
    ),
    _knn(0, 16),
    _knn(1, 16, archs=(80, 90)),
    _knn(2, 16),
    _knn(1, 64),
    _knn(1, KNN_MAX_KP),
    # tiles the GPU tuning script (benchmarks/tune_knn_triton.py) tries
    _knn(1, 16, tile=(128, 64, 16, 8)),
    _knn(1, 16, tile=(64, 128, 32, 8)),
    _knn(1, 16, tile=(128, 128, 16, 8)),
    _knn(0, 16, tile=(32, 64, 16, 4)),
]


def _stats(asm: str) -> dict:
    """Instruction counts the tests look at, from PTX text."""
    ops = re.findall(r"^\s*(?:@%p\d+\s+)?([a-z][\w.]*)", asm, flags=re.M)
    counts: dict[str, int] = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return counts


def compile_all(names=None) -> list[dict]:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    results = []
    for name, module, kernel, sig, const, opts, archs in VARIANTS:
        if names and name not in names:
            continue
        fn = getattr(importlib.import_module(f"noiseforge.kernels.{module}"), kernel)
        signature = dict(sig, **dict.fromkeys(const, "constexpr"))
        for arch in archs:
            t0 = time.perf_counter()
            entry = {"name": name, "arch": arch}
            try:
                src = ASTSource(fn=fn, signature=signature, constexprs=dict(const))
                options = _launch_options() if opts is None else opts
                compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
                entry.update(
                    ok=True,
                    ops=_stats(compiled.asm["ptx"]),
                    shared=int(compiled.metadata.shared),
                    num_warps=int(compiled.metadata.num_warps),
                )
            except Exception as exc:  # reported, and failed on, by the test
                entry.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            results.append(entry)
    return results


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    out = sys.argv[1]
    with open(out, "w") as f:
        json.dump(compile_all(sys.argv[2:] or None), f, indent=1)
