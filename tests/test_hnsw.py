"""The native HNSW index: recall against exact search, exclusion lists never
violated, persistence round trips, corrupted files and bad input rejected."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from noiseforge.index import HNSWIndex, IndexFormatError


def clustered(n, d, seed, clusters=40, spread=0.35, normalize=True):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    x = centers[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))
    if normalize:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def exact(x, q, k, metric, exclude=None):
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        score = qn.astype(np.float64) @ xn.T.astype(np.float64)
    elif metric == "ip":
        score = q.astype(np.float64) @ x.T.astype(np.float64)
    else:
        score = -((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    if exclude is not None:
        for i, e in enumerate(exclude):
            score[i, e] = -np.inf
    return np.argsort(-score, axis=1, kind="stable")[:, :k]


def recall(found, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)])


@pytest.fixture(scope="module")
def data():
    x = clustered(6000, 48, seed=1)
    q = clustered(300, 48, seed=2)
    return x, q


QUANTIZATIONS = ["sq8", "none"]


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_recall_at_10_with_default_settings(data, metric, quantization):
    x, q = data
    index = HNSWIndex(48, metric=metric, quantization=quantization)
    assert index.quantization == quantization
    index.add(x)
    ids, scores = index.search(q, 10)
    assert recall(ids, exact(x, q, 10, metric)) >= 0.95
    # best first: similarity descends (cosine/ip), distance ascends (l2)
    diffs = np.diff(scores, axis=1)
    assert np.all(diffs <= 1e-6) if metric != "l2" else np.all(diffs >= -1e-6)


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_scores_are_the_exact_metric(data, metric, quantization):
    """SQ8 only steers the walk: returned scores are the float32 metric."""
    x, q = data
    x = x[:500] * np.linspace(0.5, 2.0, 500, dtype=np.float32)[:, None]  # unequal norms
    index = HNSWIndex(48, metric=metric, quantization=quantization)
    index.add(x)
    ids, scores = index.search(q[:20], 5)
    v = x[ids].astype(np.float64)
    qq = q[:20, None, :].astype(np.float64)
    if metric == "l2":
        want = ((qq - v) ** 2).sum(-1)
    elif metric == "ip":
        want = (qq * v).sum(-1)
    else:
        want = (qq * v).sum(-1) / np.linalg.norm(v, axis=-1) / np.linalg.norm(qq, axis=-1)
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_exclusions_are_never_returned_and_rows_stay_full(data, quantization):
    x, q = data
    index = HNSWIndex(48, quantization=quantization)
    index.add(x, ids=np.arange(len(x)) * 3 + 7)  # user ids differ from positions
    rng = np.random.default_rng(3)
    truth = exact(x, q, 60, "cosine")
    exclude = []
    for i in range(len(q)):
        near = truth[i, : rng.integers(0, 60)]  # the hardest case: exclude the true neighbours
        far = rng.choice(len(x), size=rng.integers(0, 50), replace=False)
        exclude.append(np.concatenate([near, far]) * 3 + 7)
    ids, _ = index.search(q, 10, exclude=exclude)
    for row, ex in zip(ids, exclude, strict=True):
        assert not set(row.tolist()) & set(ex.tolist())
        assert (row >= 0).all() and len(set(row.tolist())) == 10
    # the same exclusions given as CSR
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in exclude])])
    ids_csr, _ = index.search(q, 10, exclude=(offsets, np.concatenate(exclude)))
    np.testing.assert_array_equal(ids, ids_csr)


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_restrictive_exclusions_fall_back_and_pad_only_when_needed(quantization):
    x = clustered(400, 16, seed=4)
    index = HNSWIndex(16, M=4, ef_construction=20, quantization=quantization)
    index.add(x)
    keep = np.array([5, 77, 300])
    everything_else = np.setdiff1d(np.arange(400), keep)
    ids, scores = index.search(x[:2], 5, exclude=[everything_else, everything_else[:-2]])
    assert sorted(ids[0, :3].tolist()) == keep.tolist()
    assert ids[0, 3:].tolist() == [-1, -1] and np.isnan(scores[0, 3:]).all()
    assert (ids[1] >= 0).all()  # five admissible vectors exist: a full row, found by the exact scan
    assert not set(ids[1].tolist()) & set(everything_else[:-2].tolist())


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_incremental_adds_and_custom_ids(data, quantization):
    x, q = data
    index = HNSWIndex(48, quantization=quantization)
    index.add(x[:3000], ids=np.arange(3000) + 10_000)
    index.add(x[3000:], ids=np.arange(3000, 6000) + 10_000)
    assert len(index) == 6000
    ids, _ = index.search(q, 10)
    assert recall(ids - 10_000, exact(x, q, 10, "cosine")) >= 0.95


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_sq8_range_widens_for_later_batches(metric):
    """A later batch outside the first batch's range re-encodes the index: recall of the
    whole index stays as high as a float32 walk's, and a one-vector first batch works."""
    x = clustered(3000, 24, seed=11, normalize=False)
    x[1500:] *= 8.0  # far outside the range of the first batches
    q = np.concatenate([x[::50], x[1500::50]]) + 0.05
    index = HNSWIndex(24, metric=metric, quantization="sq8")
    index.add(x[:1])  # a zero-width range
    index.add(x[1:1500])
    index.add(x[1500:])
    ids, _ = index.search(q, 10, ef=64)
    assert recall(ids, exact(x, q, 10, metric)) >= 0.95


_ISA_SCRIPT = """
import numpy as np
from noiseforge import _native
from noiseforge.index import HNSWIndex
from tests.test_hnsw import clustered, exact, recall
print(_native.build_info()["index_distances"])
x, q = clustered(3000, 40, seed=1), clustered(100, 40, seed=2)
for metric in ("l2", "ip"):
    for quantization in ("sq8", "none"):
        index = HNSWIndex(40, metric=metric, quantization=quantization)
        index.add(x)
        ids, scores = index.search(q, 10)
        assert recall(ids, exact(x, q, 10, metric)) >= 0.95, (metric, quantization)
        v = x[ids].astype(np.float64)
        qq = q[:, None, :].astype(np.float64)
        want = ((qq - v) ** 2).sum(-1) if metric == "l2" else (qq * v).sum(-1)
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
"""


@pytest.mark.parametrize(
    ("isa", "kernels"), [("base", "portable"), ("avx2", "avx2"), ("avx512", "avx512")]
)
def test_every_distance_kernel_family(isa, kernels):
    """The index's float32 and SQ8 kernels per ISA (capped by $NOISEFORGE_CPU_ISA):
    each family gives a good graph and the exact scores."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from noiseforge import _native

    best = _native.build_info()["index_distances"].split("+")[0]
    order = ["portable", "avx2", "avx512"]
    if order.index(kernels) > order.index(best):
        pytest.skip(f"this CPU runs at most the {best} distance kernels")
    env = dict(os.environ, NOISEFORGE_CPU_ISA=isa)
    done = subprocess.run(
        [sys.executable, "-c", _ISA_SCRIPT],
        env=env,
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0].startswith(kernels), done.stdout


def test_single_thread_build_is_reproducible():
    x = clustered(800, 12, seed=5)
    a, b = HNSWIndex(12, seed=9), HNSWIndex(12, seed=9)
    a.add(x, num_threads=1)
    b.add(x, num_threads=1)
    assert a.to_bytes() == b.to_bytes()


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_save_load_and_pickle_round_trip(tmp_path, data, quantization):
    x, q = data
    index = HNSWIndex(48, metric="ip", M=8, seed=3, quantization=quantization)
    index.add(x[:2000])
    ids, scores = index.search(q, 10)
    path = tmp_path / "index.nfhnsw"
    index.save(path)
    loaded = HNSWIndex.load(path)
    assert (loaded.dim, loaded.metric, loaded.M, len(loaded)) == (48, "ip", 8, 2000)
    assert loaded.quantization == quantization
    ids2, scores2 = loaded.search(q, 10)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(scores, scores2)
    clone = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(clone.search(q, 10)[0], ids)
    empty = HNSWIndex.from_bytes(HNSWIndex(4).to_bytes())
    assert len(empty) == 0


def test_version_1_files_still_load():
    """Version 1 (no quantization field, float32 walk) is read as quantization="none"."""
    import struct

    x = clustered(500, 8, seed=12)
    index = HNSWIndex(8, seed=2, quantization="none")
    index.add(x, num_threads=1)
    blob = bytearray(index.to_bytes())
    v1 = blob[:8] + struct.pack("<I", 1) + blob[12:28] + blob[32:]  # drop the quantization word
    loaded = HNSWIndex.from_bytes(_resign(v1))
    assert loaded.quantization == "none" and len(loaded) == 500
    np.testing.assert_array_equal(loaded.search(x[:20], 5)[0], index.search(x[:20], 5)[0])


def test_corrupted_and_truncated_files_are_rejected(tmp_path):
    index = HNSWIndex(8)
    index.add(clustered(300, 8, seed=6))
    blob = bytearray(index.to_bytes())
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    with pytest.raises(IndexFormatError, match="checksum"):
        HNSWIndex.from_bytes(bytes(flipped))
    path = tmp_path / "cut.nfhnsw"
    path.write_bytes(bytes(blob[: len(blob) - 1000]))
    with pytest.raises(IndexFormatError, match=r"cut\.nfhnsw.*(checksum|truncated)"):
        HNSWIndex.load(path)
    with pytest.raises(IndexFormatError, match="magic"):
        HNSWIndex.from_bytes(b"not an index at all")
    wrong_version = bytearray(blob)
    wrong_version[8] = 99
    with pytest.raises(IndexFormatError, match="version 99"):
        HNSWIndex.from_bytes(bytes(wrong_version))


@pytest.mark.parametrize(
    ("call", "err", "match"),
    [
        (lambda i: i.add(np.zeros((3, 5), np.float32)), ValueError, r"shape \(n, 8\)"),
        (lambda i: i.add(np.full((2, 8), np.nan, np.float32)), ValueError, "row 0 contains NaN"),
        (lambda i: i.add(np.zeros((2, 8))), TypeError, "float64"),
        (lambda i: i.add(np.ones((2, 8), np.float32), ids=[20, 20]), ValueError, "appears twice"),
        (
            lambda i: i.add(np.ones((2, 8), np.float32), ids=[0, 50]),
            ValueError,
            "id 0 .* already in the index",
        ),
        (lambda i: i.add(np.ones((2, 8), np.float32), ids=[1]), ValueError, r"ids has shape"),
        (lambda i: i.search(np.ones((1, 8), np.float32), 0), ValueError, "k must be an int >= 1"),
        (lambda i: i.search(np.ones((1, 8), np.float32), 11), ValueError, "larger than the index"),
        (lambda i: i.search(np.ones((1, 7), np.float32), 1), ValueError, r"shape \(n, 8\)"),
        (
            lambda i: i.search(np.ones((1, 8), np.float32), 1, exclude=[[1], [2]]),
            ValueError,
            "2 lists for 1 queries",
        ),
        (lambda i: i.search(np.ones((1, 8), np.float32), 1, ef=0), ValueError, "ef must be"),
    ],
)
def test_bad_input(call, err, match):
    index = HNSWIndex(8)
    index.add(clustered(10, 8, seed=7))
    with pytest.raises(err, match=match):
        call(index)
    assert len(index) == 10  # a rejected add changes nothing


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(dim=0), "dim must be"),
        (dict(dim=4, metric="hamming"), "metric must be one of"),
        (dict(dim=4, M=1), "M must be"),
        (dict(dim=4, seed=-1), "seed must be"),
        (dict(dim=4, quantization="pq"), "quantization must be one of"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HNSWIndex(**kwargs)


def _resign(blob: bytearray) -> bytes:
    """Recompute the trailing FNV-1a checksum (as a crafted file would)."""
    h = 1469598103934665603
    for byte in bytes(blob[:-8]):
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return bytes(blob[:-8]) + h.to_bytes(8, "little")


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "match"),
    [
        (56, "<i", 50, "max level|invalid"),  # max level beyond the nodes' levels
        (24, "<I", 0, "invalid header"),  # ef_construction = 0
        (28, "<I", 7, "invalid header"),  # unknown quantization mode
        (12, "<I", 2**31, "invalid header"),  # absurd dimension
        (40, "<Q", 2**32 - 3, "truncated"),  # more vectors announced than stored
        (48, "<q", 5, "entry point"),  # entry point that is not the top node
    ],
)
def test_crafted_files_with_a_valid_checksum_are_rejected(offset, fmt, value, match):
    import struct

    index = HNSWIndex(8, seed=1)
    index.add(clustered(300, 8, seed=6))
    blob = bytearray(index.to_bytes())
    struct.pack_into(fmt, blob, offset, value)
    with pytest.raises(IndexFormatError, match=match):
        HNSWIndex.from_bytes(_resign(blob))


@pytest.mark.parametrize(
    ("field", "value"),
    [("lo", float("nan")), ("scale", -1.0), ("scale", 2e36), ("lo", float("inf"))],
)
def test_crafted_quantization_ranges_are_rejected(field, value):
    import struct

    index = HNSWIndex(8, seed=1, quantization="sq8")
    index.add(clustered(300, 8, seed=6))
    blob = bytearray(index.to_bytes())
    offset = 60 + (0 if field == "lo" else 4 * 8) + 4 * 3  # dimension 3 of lo or scale
    struct.pack_into("<f", blob, offset, value)
    with pytest.raises(IndexFormatError, match="quantization range"):
        HNSWIndex.from_bytes(_resign(blob))


def test_ids_beyond_int64_are_rejected():
    index = HNSWIndex(4)
    with pytest.raises(ValueError, match="fit in int64"):
        index.add(np.ones((1, 4), np.float32), ids=np.array([2**64 - 1], dtype=np.uint64))
    index.add(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="fit in int64"):
        index.search(np.ones((1, 4), np.float32), 1, exclude=[np.array([2**63], dtype=np.uint64)])
