"""Exact top-k with exclusions: every backend returns the reference's ids
exactly (ties by lower id) and its scores."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from noiseforge.ops import knn_topk
from noiseforge.ops.knn_topk import plan_knn_topk
from tests.support.backends import backend_devices, require_backend, require_device

BACKENDS = backend_devices("knn_topk")
METRICS = ["cosine", "ip", "l2"]


def _data(q, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(q, d, generator=g), torch.randn(n, d, generator=g)


def _backend(backend, device, queries, corpus):
    require_device(device)
    require_backend(
        "knn_topk", backend, plan_knn_topk(queries[:1].to(device), corpus.to(device), 1)
    )


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("q", "n", "d", "k"), [(13, 213, 19, 10), (1, 5, 1, 5), (9, 131, 64, 1), (0, 10, 3, 2)]
)
def test_equal_to_reference(backend, device, metric, q, n, d, k):
    require_device(device)
    queries, corpus = (t.to(device) for t in _data(q, n, d, seed=n + d))
    _backend(backend, device, corpus, corpus)
    ids, scores = knn_topk(queries, corpus, k, metric=metric, backend=backend)
    ref_ids, ref_scores = knn_topk(queries, corpus, k, metric=metric, backend="torch")
    assert ids.shape == (q, k) and ids.dtype == torch.int64 and scores.dtype == torch.float32
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=0)
    if q:  # the ranking really is by score, best first
        s = scores if metric == "l2" else -scores
        assert bool((s[:, 1:] >= s[:, :-1]).all())


@pytest.mark.parametrize("metric", METRICS)
def test_native_cpu_on_a_larger_corpus(metric):
    """Many corpus chunks for the reference, many query blocks for the C++ kernel
    (the Triton interpreter is too slow for this size; GPU runs cover it there)."""
    queries, corpus = _data(37, 4099, 64, seed=8)
    _backend("cpu", "cpu", queries, corpus)
    a = knn_topk(queries, corpus, 17, metric=metric, backend="cpu")
    b = knn_topk(queries, corpus, 17, metric=metric, backend="torch")
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_ties_go_to_the_lower_id(backend, device):
    require_device(device)
    base = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    base = base.to(device)
    corpus = torch.cat([base, base, base])  # rows j, j + 5, j + 10 are identical
    _backend(backend, device, corpus, corpus)
    ids, _ = knn_topk(base, corpus, 3, metric="ip", backend=backend)
    for j in range(5):
        assert ids[j].tolist() == [j, j + 5, j + 10]


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize("metric", METRICS)
def test_exclusions_and_padding(backend, device, metric):
    require_device(device)
    queries, corpus = (t.to(device) for t in _data(12, 40, 7, seed=3))
    _backend(backend, device, queries, corpus)
    rng = np.random.default_rng(0)
    exclude = [rng.choice(40, size=rng.integers(0, 36), replace=False) for _ in range(len(queries))]
    exclude[0] = np.arange(38)  # only two admissible rows: padded
    exclude[1] = np.zeros(0, dtype=np.int64)
    ids, scores = knn_topk(queries, corpus, 5, metric=metric, exclude=exclude, backend=backend)
    ref_ids, ref_scores = knn_topk(
        queries, corpus, 5, metric=metric, exclude=exclude, backend="torch"
    )
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=0, equal_nan=True)
    for row, ex in zip(ids.tolist(), exclude, strict=True):
        assert not set(row) & set(ex.tolist())
    assert sorted(ids[0, :2].tolist()) == [38, 39] and ids[0, 2:].tolist() == [-1, -1, -1]
    assert bool(torch.isnan(scores[0, 2:]).all())
    unrestricted, _ = knn_topk(queries, corpus, 5, metric=metric, backend=backend)
    # rows with an empty exclusion list equal the unrestricted search
    for i, ex in enumerate(exclude):
        if len(ex) == 0:
            assert torch.equal(ids[i], unrestricted[i])


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_non_contiguous_and_numpy_inputs(backend, device):
    require_device(device)
    queries, corpus = _data(6, 200, 12, seed=4)
    _backend(backend, device, queries, corpus)
    qt = queries.to(device).t().contiguous().t()  # column-major view
    assert not qt.is_contiguous()
    a = knn_topk(qt, corpus.to(device)[::2], 4, backend=backend)
    b = knn_topk(queries.numpy(), corpus[::2].contiguous().numpy(), 4, backend="torch")
    assert torch.equal(a[0].cpu(), b[0])


@pytest.mark.parametrize(
    ("args", "kwargs", "err", "match"),
    [
        (
            (torch.ones(2, 3), torch.ones(4, 5), 1),
            {},
            ValueError,
            "dimension 3 but the corpus has 5",
        ),
        ((torch.ones(2, 3), torch.ones(4, 3), 5), {}, ValueError, "larger than the corpus"),
        ((torch.ones(2, 3), torch.ones(4, 3), 0), {}, ValueError, "k must be"),
        ((torch.ones(2, 3).double(), torch.ones(4, 3), 1), {}, TypeError, "float32"),
        ((torch.ones(3), torch.ones(4, 3), 1), {}, ValueError, "2-D"),
        (
            (torch.tensor([[1.0, float("nan")]]), torch.ones(4, 2), 1),
            {},
            ValueError,
            "queries row 0 contains NaN",
        ),
        ((torch.ones(2, 3), torch.zeros(4, 3), 1), {}, ValueError, "corpus row 0 is a zero vector"),
        ((torch.ones(2, 3), torch.ones(4, 3), 1), {"metric": "dot"}, ValueError, "metric must be"),
        (
            (torch.ones(2, 3), torch.ones(4, 3), 1),
            {"exclude": [[0]]},
            ValueError,
            "1 lists for 2 queries",
        ),
    ],
)
def test_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        knn_topk(*args, **kwargs)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_negative_zero_ties_with_zero(backend, device):
    require_device(device)
    queries = torch.tensor([[1e-30]], device=device)
    corpus = torch.tensor(
        [[-1e-30], [1e-30]], device=device
    )  # scores -0.0 (row 0) and +0.0 (row 1) in float32
    _backend(backend, device, torch.ones(1, 1), corpus)
    ids, _ = knn_topk(queries, corpus, 1, metric="ip", backend=backend)
    assert ids.tolist() == [[0]]  # equal scores: the lower id wins


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # float64 -> float32 inf
@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_infinite_scores_stay_admissible(backend, device):
    require_device(device)
    queries = torch.tensor([[-3e38]], device=device)
    corpus = torch.tensor(
        [[3e38], [3e38]], device=device
    )  # squared distance overflows to inf in float32
    _backend(backend, device, queries, corpus)
    ids, scores = knn_topk(queries, corpus, 1, metric="l2", exclude=[[0]], backend=backend)
    assert ids.tolist() == [[1]] and scores.tolist() == [[float("inf")]]


def _assert_same_as_reference(queries, corpus, k, metric, exclude=None):
    a = knn_topk(queries, corpus, k, metric=metric, exclude=exclude, backend="cpu")
    b = knn_topk(queries, corpus, k, metric=metric, exclude=exclude, backend="torch")
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("metric", METRICS)
def test_native_cpu_near_ties_below_float32_resolution(metric):
    """The C++ backend ranks from float32 scores with error bounds and rescores the
    candidates in double: rows that differ from one vector by ~1e-7 (scores equal
    in float32 arithmetic, distinct in double, some equal again after rounding to
    float32) must still come back exactly as the double reference ranks them."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(1, 48, generator=g)
    corpus = base + 1e-7 * torch.randn(3001, 48, generator=g)
    corpus[::7] = base  # exact duplicates: ties broken by the lower id
    queries = torch.cat([base, torch.randn(6, 48, generator=g)])
    _backend("cpu", "cpu", queries, corpus)
    exclude = [np.arange(0, 3001, 5)] + [np.array([], dtype=np.int64)] * 6
    for k in (1, 7, 64):
        _assert_same_as_reference(queries, corpus, k, metric)
        _assert_same_as_reference(queries, corpus, k, metric, exclude=exclude)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("scale", [1e-25, 1e16, 1e19], ids=["underflow", "large", "double-path"])
def test_native_cpu_extreme_magnitudes(metric, scale):
    """Products that underflow float32 (1e-25 scale), sums far from float32's
    range, and vectors so large that float32 sums could overflow (the kernel then
    scores in double throughout) all rank as the double reference does."""
    queries, corpus = _data(9, 517, 33, seed=5)
    queries, corpus = queries * scale, corpus * scale
    _backend("cpu", "cpu", queries, corpus)
    _assert_same_as_reference(queries, corpus, 10, metric)


def test_native_cpu_under_flush_to_zero():
    """With subnormals flushed (torch.set_flush_denormal, or a library compiled with
    -ffast-math) float32 products below 2^-126 become 0: the float32 filter's error
    bound would no longer hold, so the kernel must notice and score in double."""
    q = torch.full((1, 64), 2.0**-70)
    corpus = torch.zeros(2, 64)
    corpus[0, 0] = 2.0**-55  # score 2^-125
    corpus[1] = 2.0**-60  # score 2^-124: the best row
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernel then runs on this thread, whose flag is set
    try:
        assert torch.set_flush_denormal(True)
        ids, _ = knn_topk(q, corpus, 1, metric="ip", backend="cpu")
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    assert ids.tolist() == [[1]]


@pytest.mark.parametrize("metric", METRICS)
def test_native_cpu_all_tied_rows(metric):
    """Rows the float32 bound cannot tell apart (a zero query under ip, a corpus of
    one repeated vector) stay candidates; the kernel rescores them in bounded
    batches and still returns the lowest ids."""
    g = torch.Generator().manual_seed(4)
    corpus = torch.randn(1, 6, generator=g).repeat(5000, 1)
    queries = torch.randn(3, 6, generator=g)
    if metric == "ip":
        queries[0] = 0.0
    _assert_same_as_reference(queries, corpus, 10, metric)
    ids, _ = knn_topk(queries, corpus, 10, metric=metric, backend="cpu")
    assert ids[0].tolist() == list(range(10))


def test_native_cpu_very_long_vectors():
    """At d = 2^24 the float32 error bound is meaningless (n u >= 1): double path."""
    d = 2**24
    q = torch.ones(1, d)
    corpus = torch.stack([torch.full((d,), 0.5), torch.ones(d)])
    ids, scores = knn_topk(q, corpus, 1, metric="ip", backend="cpu")
    assert ids.tolist() == [[1]] and scores.tolist() == [[float(d)]]


@pytest.mark.parametrize(
    "tile",
    ["64,64,16,4", "16,16,16,4", "32,128,32,8", "16,32,16,4,3"],
    ids=["gpu-default", "n-eq-kp", "wide", "corpus-splits"],
)
def test_triton_tiles_agree(tile, monkeypatch):
    """Every tile shape of the Triton kernel (set by $NOISEFORGE_KNN_TRITON, as the
    GPU tuning script does) gives the reference's ids and scores, with exclusions."""
    knn_module = importlib.import_module("noiseforge.ops.knn_topk")

    queries, corpus = _data(7, 150, 16, seed=21)
    _backend("triton", "cpu", queries, corpus)
    monkeypatch.setenv(knn_module.TRITON_TILE_ENV, tile)
    exclude = [np.arange(i, 150, 31) for i in range(7)]  # k + 5 exclusions: 16 keys kept
    for metric in ("ip", "l2"):  # cosine differs from ip only after the dot products
        a = knn_topk(queries, corpus, 9, metric=metric, exclude=exclude, backend="triton")
        b = knn_topk(queries, corpus, 9, metric=metric, exclude=exclude, backend="torch")
        assert torch.equal(a[0], b[0])
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)


@pytest.mark.parametrize("value", ["64,64", "64,64,8,4", "64,48,16,4", "a,b,c,d", "64,64,16,4,-1"])
def test_triton_tile_override_is_checked(value, monkeypatch):
    knn_module = importlib.import_module("noiseforge.ops.knn_topk")

    monkeypatch.setenv(knn_module.TRITON_TILE_ENV, value)
    with pytest.raises(ValueError, match="four powers of two"):
        knn_module.triton_tile(16)
