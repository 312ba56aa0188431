"""The native HNSW index: recall against exact search, exclusion lists never
violated, persistence round trips, corrupted files and bad input rejected."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from noiseforge.index import HNSWIndex, IndexFormatError
from tests.support.faults import DiskFull
from tests.support.vectors import clustered, exact, recall


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
from tests.support.vectors import clustered, exact, recall
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
        cwd=Path(__file__).resolve().parents[2],
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


def test_a_failed_save_leaves_no_partial_file_and_the_old_one_intact(tmp_path, monkeypatch):
    folder = tmp_path / "indexes"
    folder.mkdir()
    path = folder / "index.nfhnsw"
    old = HNSWIndex(8)
    old.add(clustered(10, 8, seed=1))
    old.save(path)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # the permissions open() gives a new file under this umask
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    saved = path.read_bytes()
    new = HNSWIndex(8)
    new.add(clustered(20, 8, seed=2))
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: DiskFull(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="No space left"):
        new.save(path)
    monkeypatch.undo()
    assert list(folder.iterdir()) == [path]  # no temporary file left behind
    assert path.read_bytes() == saved
    assert len(HNSWIndex.load(path)) == 10


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
        (lambda i: i.add(np.zeros((2, 8), np.int64)), TypeError, r"int64; convert with \.astype"),
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


# --------------------------------------------------------------------------- hardening (issue 14)


@pytest.fixture
def small():
    index = HNSWIndex(8, seed=1)
    index.add(clustered(50, 8, seed=7), num_threads=1)
    return index


@pytest.mark.parametrize("method", ["add", "search"])
@pytest.mark.parametrize(
    ("threads", "err", "match"),
    [
        (-1, ValueError, r"num_threads must be an int in \[1, 4096\], got -1 \(None or 0"),
        (-2, ValueError, "got -2"),
        (100_000, ValueError, "got 100000"),
        (2**40, ValueError, "got 1099511627776"),
        (True, TypeError, "num_threads must be an int, got bool"),
        (2.0, TypeError, "got float"),
        ("4", TypeError, "got str"),
    ],
)
def test_bad_thread_counts_are_refused_before_the_native_call(small, method, threads, err, match):
    """-1/-2 aborted the process in libgomp and 100000 segfaulted."""
    x = clustered(3, 8, seed=8)
    with pytest.raises(err, match=match):
        if method == "add":
            small.add(x, ids=[900, 901, 902], num_threads=threads)
        else:
            small.search(x, 2, num_threads=threads)
    assert len(small) == 50


@pytest.mark.parametrize("threads", [None, 0, 1, 3, 4096])
def test_thread_counts_accepted_and_capped(small, threads):
    """None and 0 are the default; up to 4096 is accepted, at most os.cpu_count() start."""
    from noiseforge.index import hnsw

    q = clustered(5, 8, seed=9)
    want = small.search(q, 3, num_threads=1)
    np.testing.assert_array_equal(small.search(q, 3, num_threads=threads)[0], want[0])
    small.add(q, ids=np.arange(5) + 1000, num_threads=threads)
    assert len(small) == 55
    assert hnsw._threads(4096) <= (os.cpu_count() or 1)


def test_huge_ef_is_the_whole_index_and_bad_ef_is_refused(small):
    q = clustered(4, 8, seed=10)
    wide = small.search(q, 5, ef=2**40)  # the pybind message showed raw pointers
    np.testing.assert_array_equal(wide[0], small.search(q, 5, ef=len(small))[0])
    with pytest.raises(ValueError, match=r"ef must be an int in \[1, "):
        small.search(q, 5, ef=0)
    with pytest.raises(TypeError, match="ef must be an int, got float"):
        small.search(q, 5, ef=64.0)
    with pytest.raises(ValueError, match=r"ef must be an int in"):
        small.search(q, 5, ef=2**70)


def test_k_is_checked(small):
    q = clustered(1, 8, seed=11)
    with pytest.raises(
        ValueError,
        match=r"k=1099511627776 is larger than the index \(50 vectors\); ask for k <= 50",
    ):
        small.search(q, 2**40)
    with pytest.raises(TypeError, match="k must be an int, got bool"):
        small.search(q, True)
    with pytest.raises(ValueError, match="the index is empty: add vectors"):
        HNSWIndex(8).search(q, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(dim=2**20 + 1), r"dim must be an int in \[1, 1048576\]"),
        (dict(dim=2**40), "dim must be an int in"),
        (dict(dim=4, M=257), r"M must be an int in \[2, 256\], got 257"),
        (dict(dim=4, M=2**40), "M must be an int in"),
        (
            dict(dim=4, ef_construction=2**20 + 1),
            r"ef_construction must be an int in \[1, 1048576\]",
        ),
        (dict(dim=4, ef_construction=2**40), "ef_construction must be an int in"),
        (dict(dim=4, metric=["l2"]), "metric must be one of"),
        (dict(dim=4, quantization=["sq8"]), "quantization must be one of"),
    ],
)
def test_parameters_beyond_what_a_file_can_hold_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HNSWIndex(**kwargs)


def test_largest_parameters_save_and_load():
    """What the constructor accepts, the loader accepts (same limits)."""
    index = HNSWIndex(2**20, M=256, ef_construction=2**20)
    loaded = HNSWIndex.from_bytes(index.to_bytes())
    assert (loaded.dim, loaded.M, loaded.ef_construction) == (2**20, 256, 2**20)


@pytest.mark.parametrize("kind", ["float64", "float16", "torch-float64", "torch-bfloat16"])
def test_other_float_dtypes_are_converted_to_float32(kind):
    import torch

    x32 = clustered(200, 8, seed=12)
    q32 = clustered(10, 8, seed=13)
    if kind == "float16":
        x32, q32 = (
            x32.astype(np.float16).astype(np.float32),
            q32.astype(np.float16).astype(np.float32),
        )
    convert = {
        "float64": lambda a: a.astype(np.float64),
        "float16": lambda a: a.astype(np.float16),
        "torch-float64": lambda a: torch.from_numpy(a).double(),
        "torch-bfloat16": lambda a: torch.from_numpy(a).bfloat16(),
    }[kind]
    if kind == "torch-bfloat16":
        x32 = torch.from_numpy(x32).bfloat16().float().numpy()
        q32 = torch.from_numpy(q32).bfloat16().float().numpy()
    a, b = HNSWIndex(8, seed=2), HNSWIndex(8, seed=2)
    a.add(x32, num_threads=1)
    b.add(convert(x32), num_threads=1)
    assert a.to_bytes() == b.to_bytes()
    np.testing.assert_array_equal(a.search(q32, 5)[0], b.search(convert(q32), 5)[0])


@pytest.mark.parametrize(
    ("vectors", "match"),
    [
        (np.full((2, 8), np.inf, np.float32), "row 0 contains NaN or inf"),
        (
            np.concatenate([np.ones((3, 8)), np.full((1, 8), 1e16)]),
            r"row 3 has a component of magnitude 1e\+16.*within \+-1e\+15",
        ),
        (np.full((1, 8), 1e300), "magnitude 1e\\+300"),  # float64 beyond float32
        (np.ones((2, 8), np.complex64), "must be floating-point"),
        (np.ones((2, 8), bool), "got dtype bool"),
        ([[1.0, 2.0], [3.0]], r"must be an \(n, 8\) array of numbers"),
        (np.ones((2, 1, 8), np.float32), r"shape \(n, 8\).*got \(2, 1, 8\); reshape"),
        (np.ones(7, np.float32), r"got \(7,\)"),
    ],
)
def test_bad_vectors_are_refused_by_add_and_search(small, vectors, match):
    err = TypeError if "floating" in match or "bool" in match or "numbers" in match else ValueError
    with pytest.raises(err, match=match):
        small.add(vectors)
    with pytest.raises(err, match=match.replace("vectors", "queries")):
        small.search(vectors, 1)
    assert len(small) == 50


@pytest.mark.parametrize("bad", [-1, -5, -(2**63)])
def test_negative_ids_are_refused(small, bad):
    with pytest.raises(
        ValueError,
        match=rf"ids must be >= 0 \(search results pad short rows with id -1\); ids\[1\] is {bad}",
    ):
        small.add(clustered(2, 8, seed=14), ids=[500, bad])
    assert len(small) == 50


def test_every_input_layout_gives_the_same_answer(small):
    import torch

    q = clustered(6, 8, seed=15)
    want = small.search(q, 4)
    for layout in (
        np.asfortranarray(q),
        q[::-1][::-1],
        np.ascontiguousarray(q[::-1])[::-1],  # negative strides
        np.repeat(q, 2, axis=1)[:, ::2],  # every other column of a wider array
        torch.from_numpy(q).t().contiguous().t(),
        q.tolist(),
    ):
        np.testing.assert_array_equal(small.search(layout, 4)[0], want[0])
    one = small.search(q[0], 4)  # a single (dim,) vector is one query
    np.testing.assert_array_equal(one[0], want[0][:1])
    none = small.search(np.zeros((0, 8), np.float32), 4)
    assert none[0].shape == (0, 4) and none[1].shape == (0, 4)
    small.add(np.zeros((0, 8), np.float32))
    assert len(small) == 50


@pytest.mark.parametrize(
    ("exclude", "err", "match"),
    [
        (5, TypeError, "exclude must be None, a list with one array of ids per query"),
        (iter([[1], [2]]), TypeError, "got list_iterator"),
        ("ab", TypeError, "got str"),
        (([0.0, 1, 1], [3]), TypeError, "exclude offsets must be integers"),
        ([[1.5], []], TypeError, "exclude ids must be integers"),
        (
            ([0, 1], [3]),
            ValueError,
            r"a 2-tuple is read as CSR \(offsets, ids\); give per-query lists as a list",
        ),
    ],
)
def test_bad_exclusions_are_refused(small, exclude, err, match):
    with pytest.raises(err, match=match):
        small.search(clustered(2, 8, seed=16), 2, exclude=exclude)


def test_wide_sq8_range_saves_and_loads():
    """An SQ8 range wider than float32 could be saved but not loaded (255 * scale
    overflowed): components are bounded by 1e15, so every range stays loadable."""
    rng = np.random.default_rng(17)
    for metric in ("l2", "ip"):
        index = HNSWIndex(8, metric=metric, quantization="sq8")
        index.add((rng.choice([-1.0, 1.0], size=(300, 8)) * 1e15).astype(np.float32))
        index.add((rng.random((300, 8)) * 2e15 - 1e15).astype(np.float32))  # widens
        loaded = HNSWIndex.from_bytes(index.to_bytes())
        q = (rng.random((10, 8)) * 2e15 - 1e15).astype(np.float32)
        ids, scores = loaded.search(q, 5)
        np.testing.assert_array_equal(ids, index.search(q, 5)[0])
        assert np.isfinite(scores).all()
        with pytest.raises(ValueError, match="magnitude 3e\\+38"):
            index.add(np.full((1, 8), 3e38, np.float32))


def _vector_offset(index, node, dim_index):
    head = 60 + (8 * index.dim if index.quantization == "sq8" else 0)
    return head + 4 * (node * index.dim + dim_index)


@pytest.mark.parametrize(
    ("what", "value", "match"),
    [
        (
            "vector",
            float("nan"),
            "stored vector at node 5 contains NaN or inf; the file is damaged",
        ),
        ("vector", float("inf"), "stored vector at node 5 contains NaN or inf"),
        ("vector", 1e30, r"stored vector at node 5 has a component of magnitude 1e\+30"),
        ("id", -1, r"stored id -1 \(node 7\) is negative; ids are >= 0 \(-1 pads search results\)"),
        ("id", -(2**63), "is negative"),
        ("scale", 1e20, r"invalid quantization range \(dimension 2"),
        ("lo", -1e30, r"invalid quantization range \(dimension 2"),
    ],
)
@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_loading_refuses_what_add_refuses(what, value, match, quantization):
    """NaN/inf vectors (NaN-scored top hits) and -1 ids (that look like padding) in a
    file with a valid checksum: refused on load, as add() refuses them."""
    import struct

    if what in ("scale", "lo") and quantization == "none":
        pytest.skip("no quantization range in a float32-walk file")
    index = HNSWIndex(8, seed=1, metric="ip", quantization=quantization)
    index.add(clustered(100, 8, seed=6), num_threads=1)
    blob = bytearray(index.to_bytes())
    if what == "vector":
        struct.pack_into("<f", blob, _vector_offset(index, 5, 3), value)
    elif what == "id":
        struct.pack_into("<q", blob, _vector_offset(index, 100, 0) + 8 * 7, value)
    else:
        struct.pack_into("<f", blob, 60 + (0 if what == "lo" else 32) + 4 * 2, value)
    with pytest.raises(IndexFormatError, match=match):
        HNSWIndex.from_bytes(_resign(blob))


def test_from_bytes_takes_bytes_only():
    with pytest.raises(TypeError, match="data must be bytes, got int"):
        HNSWIndex.from_bytes(10**12)  # bytes(n) would allocate n zero bytes
    with pytest.raises(TypeError, match="got str"):
        HNSWIndex.from_bytes("NFHNSW01")
    blob = HNSWIndex(4).to_bytes()
    assert len(HNSWIndex.from_bytes(bytearray(blob))) == 0
    assert len(HNSWIndex.from_bytes(memoryview(blob))) == 0


def test_search_and_add_from_several_threads():
    """add() reallocates the native arrays: a search running meanwhile read freed
    memory and segfaulted. Now searches wait for an add and the reverse."""
    import threading

    rng = np.random.default_rng(18)
    index = HNSWIndex(16, quantization="none")
    index.add(rng.random((1000, 16), dtype=np.float32))
    stop = threading.Event()
    errors: list[BaseException] = []
    queries = rng.random((100, 16), dtype=np.float32)

    def searcher():
        try:
            while not stop.is_set():
                ids, _ = index.search(queries, 5, num_threads=1)
                assert (ids >= 0).all()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(12):
            index.add(rng.random((500, 16), dtype=np.float32), num_threads=1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(index) == 7000


def test_a_forked_child_runs_on_one_thread_instead_of_hanging():
    """GNU OpenMP's pool does not survive fork: num_threads=2 in a child hung."""
    import time

    index = HNSWIndex(16)
    x = clustered(2000, 16, seed=19)
    index.add(x, num_threads=2)
    index.search(x[:100], 5, num_threads=2)
    pid = os.fork()
    if pid == 0:
        try:
            index.search(x[:100], 5, num_threads=2)
            index.add(x[:10] + 1.0, ids=np.arange(10) + 5000, num_threads=2)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung in its search")


def test_an_index_forked_in_the_middle_of_an_add_is_refused_in_the_child():
    from noiseforge.index.hnsw import _ReadWriteLock

    lock = _ReadWriteLock()
    with lock.write():
        lock.reset_after_fork()  # as the child sees it: another thread was inside add()
    with pytest.raises(RuntimeError, match="load it from a file here"):
        with lock.read():
            pass
    fresh = _ReadWriteLock()
    fresh.reset_after_fork()
    with fresh.read():
        pass
