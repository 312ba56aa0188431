"""Every op's C++ kernels are compiled once per instruction set (base, AVX2, AVX-512) and
chosen at run time; ``$NOISEFORGE_CPU_ISA`` caps the choice. Each variant this CPU can
run must give the torch reference's bits, for every op."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from noiseforge import _native

_SCRIPT = """
import torch
from noiseforge import _native
from noiseforge.ops import (
    aggregate_labels, knn_topk, ldp_noise, philox_words, soft_label_sum, vote_histogram,
)
assert _native.build_info()["cpu_isa"] == "{isa}", _native.build_info()["cpu_isa"]
g = torch.Generator().manual_seed(1)

# ldp_noise: every mechanism, dtype and clamp setting
x = torch.rand(7, 261, generator=g) * 3 - 1
for mech, kw in [("laplace", {{}}), ("gaussian", {{"delta": 1e-5}}), ("discrete_laplace", {{}})]:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for clamp in ((True, False) if mech != "discrete_laplace" else (True,)):
            args = dict(epsilon=1.3, lower=-1.0, upper=2.0, mechanism=mech, copies=3,
                        seed=2**40 + 5, offset=2**32 - 100, clamp=clamp, **kw)
            a = ldp_noise(x.to(dtype), backend="cpu", **args)
            b = ldp_noise(x.to(dtype), backend="torch", **args)
            assert torch.equal(a, b), (mech, dtype, clamp)
# a discrete call large enough (>= 2**16 outputs) for the bucketed magnitude search
x2 = torch.rand(40, 600, generator=g)
for levels in (256, 4097):
    args = dict(epsilon=2.0, lower=0.0, upper=1.0, mechanism="discrete_laplace", levels=levels,
                copies=3, seed=3, offset=7)
    a = ldp_noise(x2, backend="cpu", **args)
    assert torch.equal(a, ldp_noise(x2, backend="torch", **args)), levels

# philox_words
w = philox_words(1001, seed=9, offset=2**32 - 500, backend="cpu")
assert torch.equal(w, philox_words(1001, seed=9, offset=2**32 - 500, backend="torch"))

# knn_topk: every metric, a width that is not a multiple of any vector length
q, c = torch.randn(37, 45, generator=g), torch.randn(530, 45, generator=g)
for metric in ("cosine", "ip", "l2"):
    ids, scores = knn_topk(q, c, 9, metric=metric, backend="cpu")
    want_ids, want_scores = knn_topk(q, c, 9, metric=metric, backend="torch")
    assert torch.equal(ids, want_ids) and torch.equal(scores, want_scores), metric

# the scatter ops: over 2**16 answers (the partitioned path), weights and soft labels
m, n, k = 70_000, 3_000, 7
index = torch.randint(0, n, (m,), generator=g)
labels = torch.randint(0, k, (m,), generator=g)
weights = torch.rand(m, generator=g)
probs = torch.softmax(torch.randn(m, k, generator=g), dim=1)
for idx in (index, index.sort().values):
    for wt in (None, weights):
        a = vote_histogram(idx, labels, n, k, weights=wt, backend="cpu")
        assert torch.equal(a, vote_histogram(idx, labels, n, k, weights=wt, backend="torch"))
    a = soft_label_sum(idx, probs, n, backend="cpu")
    assert torch.equal(a, soft_label_sum(idx, probs, n, backend="torch"))
    for kw in (dict(labels=labels, num_classes=k), dict(probs=probs)):
        a = aggregate_labels(idx, n, backend="cpu", **kw)
        b = aggregate_labels(idx, n, backend="torch", **kw)
        for name in ("label", "top", "share", "margin"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
print("ok")
"""


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_every_compiled_cpu_variant_matches_the_reference(isa):
    best = _native.build_info()["cpu_isa"]
    order = ["base", "avx2", "avx512"]
    if order.index(isa) > order.index(best):
        pytest.skip(f"this CPU runs at most the {best} variant")
    env = dict(os.environ, NOISEFORGE_CPU_ISA=isa)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(isa=isa)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
