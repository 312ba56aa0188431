"""Label-aggregation ops: every backend equals the torch reference exactly
(counts and float sums), on random and adversarial inputs, plus bad input."""

from __future__ import annotations

import pytest
import torch

from noiseforge.ops import aggregate_labels, aggregate_top1, soft_label_sum, vote_histogram
from noiseforge.ops.aggregate import plan_vote_histogram
from noiseforge.reference.aggregate import fixed_point_shift
from tests.support.backends import backend_devices, require_backend, require_device


def _case(name, gen):
    """(index, labels, weights, probs, N, C) for one named input pattern."""
    if name == "random":
        m, n, c = 5003, 123, 7
        index = torch.randint(0, n, (m,), generator=gen)
    elif name == "sorted":
        m, n, c = 4099, 301, 5
        index = torch.randint(0, n, (m,), generator=gen).sort().values
    elif name == "grouped-copies":  # LDPKiT: K answers per input, in order
        n, k, c = 257, 8, 10
        m = n * k
        index = torch.arange(n).repeat_interleave(k)
    elif name == "all-to-one":
        m, n, c = 3001, 5, 3
        index = torch.full((m,), 2)
    elif name == "no-answers":
        m, n, c = 0, 6, 4
        index = torch.zeros(0, dtype=torch.int64)
    elif name == "one-class":
        m, n, c = 777, 50, 1
        index = torch.randint(0, n, (m,), generator=gen)
    elif name == "many-classes":
        m, n, c = 3000, 40, 1000
        index = torch.randint(0, n, (m,), generator=gen)
    elif name == "large-random":  # takes the partitioned (radix) path of the C++ backend
        m, n, c = 70_001, 3_001, 6
        index = torch.randint(0, n, (m,), generator=gen)
    elif name == "large-random-many-blocks":  # partitioned, 16-bit cells, ~25 row blocks
        m, n, c = 70_001, 200_000, 6
        index = torch.randint(0, n, (m,), generator=gen)
    elif name == "sorted-many-classes":  # grouped path, tiles of one or two rows
        m, n, c = 3000, 40, 3000
        index = torch.randint(0, n, (m,), generator=gen).sort().values
    elif name == "sorted-many-tiles":  # grouped path across tiles and thread splits
        m, n, c = 60_000, 9_000, 7
        index = torch.randint(0, n, (m,), generator=gen).sort().values
    elif name == "sparse-inputs":  # most inputs receive nothing
        m, n, c = 100, 10_000, 3
        index = torch.randint(0, n, (m,), generator=gen).sort().values
    else:
        raise KeyError(name)
    labels = torch.randint(0, c, (m,), generator=gen)
    weights = torch.rand(m, generator=gen)
    weights[::7] = 0.0  # zero weights are legal votes of nothing
    probs = torch.softmax(torch.randn(m, c, generator=gen), dim=1)
    return index, labels, weights, probs, n, c


def _random_votes(m: int, n: int, c: int, g: torch.Generator):
    """m answers at random: (index in [0, n), labels in [0, c), weights in [0, 1))."""
    index = torch.randint(0, n, (m,), generator=g)
    labels = torch.randint(0, c, (m,), generator=g)
    return index, labels, torch.rand(m, generator=g)


CASES = [
    "random",
    "large-random",
    "large-random-many-blocks",
    "sorted",
    "grouped-copies",
    "sorted-many-classes",
    "sorted-many-tiles",
    "all-to-one",
    "no-answers",
    "one-class",
    "many-classes",
    "sparse-inputs",
]


def _backend_ok(backend, device):
    require_device(device)
    z = torch.zeros(1, dtype=torch.int64, device=device)
    require_backend("vote_histogram", backend, plan_vote_histogram(z, z, 1, 1))


@pytest.mark.parametrize(("backend", "device"), backend_devices("vote_histogram"))
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("int_dtype", [torch.int64, torch.int32])
def test_equal_to_reference(backend, device, case, int_dtype):
    _backend_ok(backend, device)
    index, labels, weights, probs, n, c = _case(case, torch.Generator().manual_seed(len(case)))
    index, labels = index.to(int_dtype).to(device), labels.to(int_dtype).to(device)
    weights, probs = weights.to(device), probs.to(device)
    for count_dtype in (torch.int64, torch.int32):
        got = vote_histogram(index, labels, n, c, dtype=count_dtype, backend=backend)
        want = vote_histogram(index, labels, n, c, dtype=count_dtype, backend="torch")
        assert got.dtype == count_dtype and torch.equal(got.cpu(), want.cpu())
    assert int(got.sum()) == index.numel()
    got_w = vote_histogram(index, labels, n, c, weights=weights, backend=backend)
    want_w = vote_histogram(index, labels, n, c, weights=weights, backend="torch")
    assert got_w.dtype == torch.float32 and torch.equal(got_w.cpu(), want_w.cpu())
    got_s = soft_label_sum(index, probs, n, backend=backend)
    want_s = soft_label_sum(index, probs, n, backend="torch")
    assert torch.equal(got_s.cpu(), want_s.cpu())
    got_m = soft_label_sum(index, probs, n, mean=True, backend=backend)
    assert torch.equal(
        got_m.cpu(), soft_label_sum(index, probs, n, mean=True, backend="torch").cpu()
    )


@pytest.mark.parametrize(("backend", "device"), backend_devices("vote_histogram"))
def test_non_contiguous_and_half_inputs(backend, device):
    _backend_ok(backend, device)
    g = torch.Generator().manual_seed(3)
    index = torch.randint(0, 20, (400,), generator=g).to(device)[::2]
    labels = torch.randint(0, 4, (400,), generator=g).to(device)[1::2]
    weights = torch.rand(200, 2, generator=g).to(device)[:, 0].half()
    probs = torch.rand(4, 200, generator=g).to(device).t().bfloat16()
    assert not index.is_contiguous() and not probs.is_contiguous()
    for fn in (
        lambda b: vote_histogram(index, labels, 20, 4, backend=b),
        lambda b: vote_histogram(index, labels, 20, 4, weights=weights, backend=b),
        lambda b: soft_label_sum(index, probs, 20, backend=b),
    ):
        assert torch.equal(fn(backend).cpu(), fn("torch").cpu())


def test_float_sums_are_order_independent_and_accurate():
    g = torch.Generator().manual_seed(5)
    m, n, c = 20000, 64, 6
    index = torch.randint(0, n, (m,), generator=g)
    labels = torch.randint(0, c, (m,), generator=g)
    weights = torch.rand(m, generator=g) * 3
    perm = torch.randperm(m, generator=g)
    for backend in ("torch", "cpu"):
        a = vote_histogram(index, labels, n, c, weights=weights, backend=backend)
        b = vote_histogram(index[perm], labels[perm], n, c, weights=weights[perm], backend=backend)
        assert torch.equal(a, b), "a different answer order changed the float sums"
    exact = torch.zeros(n * c, dtype=torch.float64).index_add_(
        0, index * c + labels, weights.double()
    )
    # within float32 rounding of the exact sum (plus the tiny fixed-point error)
    torch.testing.assert_close(a.double().reshape(-1), exact, rtol=1.2e-7, atol=1e-9)


def test_fixed_point_shift_bounds_every_bin():
    for max_w, m in [(1.0, 8_000_000), (3.5, 17), (1e-30, 5), (2.0**100, 3), (0.7, 1)]:
        k = fixed_point_shift(max_w, m)
        assert m * max_w * 2.0**k <= 2.0**62
        assert m * max_w * 2.0**k > 2.0**59  # and uses most of the 63 bits
    assert fixed_point_shift(0.0, 10) == 0 and fixed_point_shift(1.0, 0) == 0


def test_top1_ties_shares_and_empty_rows():
    hist = torch.tensor([[3, 1, 3], [0, 0, 0], [0, 5, 1], [2, 2, 2]])
    top = aggregate_top1(hist)
    assert top.label.tolist() == [0, -1, 1, 0]  # ties -> lowest class id; empty -> -1
    assert top.top.tolist() == [3, 0, 5, 2]
    torch.testing.assert_close(top.share, torch.tensor([3 / 7, 0.0, 5 / 6, 1 / 3]))
    torch.testing.assert_close(top.margin, torch.tensor([0.0, 0.0, 4 / 6, 0.0]))
    one = aggregate_top1(torch.tensor([[4.0], [0.0]]))
    assert one.label.tolist() == [0, -1] and one.margin.tolist() == [1.0, 0.0]


def test_top1_end_to_end_recovers_majority_labels():
    g = torch.Generator().manual_seed(9)
    n, k, c = 500, 9, 4
    truth = torch.randint(0, c, (n,), generator=g)
    noisy = torch.where(
        torch.rand(n, k, generator=g) < 0.7,
        truth.unsqueeze(1),
        torch.randint(0, c, (n, k), generator=g),
    )
    hist = vote_histogram(torch.arange(n).repeat_interleave(k), noisy.reshape(-1), n, c)
    acc = (aggregate_top1(hist).label == truth).float().mean()
    assert acc > 0.95


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(index=[0, 3, 9, 1], labels=[0, 1, 1, 0]),
            r"index\[2\] = 9 is outside \[0, num_inputs=5\)",
        ),
        (dict(index=[0, -1, 2, 1], labels=[0, 1, 1, 0]), r"index\[1\] = -1"),
        (
            dict(index=[0, 1, 2, 3], labels=[0, 1, 3, 5]),
            r"labels\[2\] = 3 is outside \[0, num_classes=3\)",
        ),
        (dict(index=[3, 1, 2, 0], labels=[0, -2, 0, 0]), r"labels\[1\] = -2"),
        (
            dict(index=[0, 1, 2, 3], labels=[0, 1, 1, 0], weights=[1.0, -0.5, 1.0, 1.0]),
            r"weights\[1\] = -0.5 is not a finite number >= 0",
        ),
        (
            dict(index=[0, 1, 2, 3], labels=[0, 1, 1, 0], weights=[1.0, 1.0, 1.0, float("nan")]),
            r"weights\[3\] = nan",
        ),
    ],
)
def test_bad_content_names_the_first_offending_position(backend, kwargs, match):
    _backend_ok(backend, "cpu")
    index = torch.tensor(kwargs["index"])
    labels = torch.tensor(kwargs["labels"])
    weights = torch.tensor(kwargs["weights"]) if "weights" in kwargs else None
    with pytest.raises(ValueError, match=match):
        vote_histogram(index, labels, 5, 3, weights=weights, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_bad_entries_in_a_large_unordered_input(backend):
    _backend_ok(backend, "cpu")
    g = torch.Generator().manual_seed(1)
    index = torch.randint(0, 500, (70_000,), generator=g)
    labels = torch.randint(0, 4, (70_000,), generator=g)
    labels[[40_000, 60_000]] = 4
    with pytest.raises(ValueError, match=r"labels\[40000\] = 4"):
        vote_histogram(index, labels, 500, 4, backend=backend)
    index[[50_000, 65_000]] = 500
    with pytest.raises(ValueError, match=r"index\[50000\] = 500"):
        vote_histogram(index, labels, 500, 4, backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_unordered_input_over_several_partition_chunks(backend):
    """The C++ partition works on chunks of 2^19 answers: counts, weighted and
    soft-label sums over three chunks equal the reference, and the first bad
    index / weight / label is named whichever chunk (and thread) holds it."""
    _backend_ok(backend, "cpu")
    g = torch.Generator().manual_seed(3)
    m, n, c = 1_200_001, 300_007, 3
    index, labels, weights = _random_votes(m, n, c, g)
    for w in (None, weights):
        got = vote_histogram(index, labels, n, c, weights=w, backend=backend)
        assert torch.equal(got, vote_histogram(index, labels, n, c, weights=w, backend="torch"))
    probs = torch.softmax(torch.randn(m, c, generator=g), dim=1)
    got = soft_label_sum(index, probs, n, backend=backend)
    assert torch.equal(got, soft_label_sum(index, probs, n, backend="torch"))
    bad_weights = weights.clone()
    bad_weights[[1_100_000, 700_000]] = float("nan")
    bad_labels = labels.clone()
    bad_labels[[900_000, 10]] = c
    with pytest.raises(ValueError, match=r"weights\[700000\] = nan"):
        vote_histogram(index, bad_labels, n, c, weights=bad_weights, backend=backend)
    with pytest.raises(ValueError, match=rf"labels\[10\] = {c} is outside"):
        vote_histogram(index, bad_labels, n, c, weights=weights, backend=backend)
    index[[1_150_000, 600_001, 1_000_000]] = torch.tensor([-1, n, n + 5])
    for w in (None, bad_weights):
        with pytest.raises(ValueError, match=rf"index\[600001\] = {n} is outside"):
            vote_histogram(index, bad_labels, n, c, weights=w, backend=backend)
    with pytest.raises(ValueError, match=rf"index\[600001\] = {n} is outside"):
        soft_label_sum(index, probs, n, backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("big", [1e6, 3.0, 0.0])
def test_grouped_weights_with_one_large_outlier(backend, big):
    """Grouped (sorted) input whose largest weight is one rare outlier (or
    zero): the fixed-point scale follows it, the bits equal the reference's,
    and a bad weight found late is reported before an earlier bad label."""
    _backend_ok(backend, "cpu")
    g = torch.Generator().manual_seed(4)
    m, n, c = 100_003, 12_000, 4
    index = torch.randint(0, n, (m,), generator=g).sort().values
    labels = torch.randint(0, c, (m,), generator=g)
    weights = torch.rand(m, generator=g) * 0.3
    weights[12_345] = big
    got = vote_histogram(index, labels, n, c, weights=weights, backend=backend)
    want = vote_histogram(index, labels, n, c, weights=weights, backend="torch")
    assert torch.equal(got, want)
    assert got[index[12_345], labels[12_345]] >= big
    weights[50_001] = -2.0  # found by the pass, reported before the bad label
    labels[7] = c
    with pytest.raises(ValueError, match=r"weights\[50001\] = -2"):
        vote_histogram(index, labels, n, c, weights=weights, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_weight_scan_over_many_chunks(backend):
    """The value scan works on 32k-value chunks: bad weights in later chunks are
    found (the first one named), and the edge values of a legal weight -- -0.0,
    the smallest subnormal, the largest finite float -- are accepted and summed."""
    _backend_ok(backend, "cpu")
    g = torch.Generator().manual_seed(2)
    m, n, c = 100_003, 1_000, 3
    index, labels, weights = _random_votes(m, n, c, g)
    tiny, big = torch.finfo(torch.float32).smallest_normal / 2**23, torch.finfo(torch.float32).max
    weights[[5, 70_000, 99_999]] = torch.tensor([-0.0, tiny, big])
    got = vote_histogram(index, labels, n, c, weights=weights, backend=backend)
    want = vote_histogram(index, labels, n, c, weights=weights, backend="torch")
    assert torch.equal(got, want)
    assert got[index[99_999], labels[99_999]] >= big  # the largest weight is not lost
    for pos, bad in ((90_001, float("nan")), (70_000, float("-inf")), (33_000, -1e-30)):
        weights[pos] = bad
        with pytest.raises(ValueError, match=rf"weights\[{pos}\] = "):
            vote_histogram(index, labels, n, c, weights=weights, backend=backend)
    labels[10] = c  # a bad weight is reported before a bad label, wherever they are
    with pytest.raises(ValueError, match=r"weights\[33000\] = "):
        vote_histogram(index, labels, n, c, weights=weights, backend=backend)
    order = index.sort(stable=True).indices  # the same answers, grouped by input
    first = int(torch.nonzero(~(torch.isfinite(weights) & (weights >= 0))[order])[0])
    with pytest.raises(ValueError, match=rf"weights\[{first}\] = "):
        vote_histogram(index[order], labels[order], n, c, weights=weights[order], backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("at", [1, 299, 30_001, 59_999])
def test_grouped_input_broken_late(backend, at):
    """Sorted input whose order breaks (or whose index leaves [0, N), or whose
    label is bad) at one late answer: the grouped path has already written
    rows by then; the result must still equal the reference, or the error must
    name that answer."""
    _backend_ok(backend, "cpu")
    g = torch.Generator().manual_seed(at)
    m, n, c = 60_000, 9_000, 7
    index = torch.randint(0, n, (m,), generator=g).sort().values
    labels = torch.randint(0, c, (m,), generator=g)
    weights = torch.rand(m, generator=g)
    probs = torch.softmax(torch.randn(m, c, generator=g), dim=1)
    swapped = index.clone()
    swapped[at - 1] = max(int(index[at - 1]), 1)
    swapped[at] = int(swapped[at - 1]) - 1  # out of order at `at`
    for idx in (swapped, index.flip(0)):
        for w in (None, weights):
            got = vote_histogram(idx, labels, n, c, weights=w, backend=backend)
            assert torch.equal(got, vote_histogram(idx, labels, n, c, weights=w, backend="torch"))
        got = soft_label_sum(idx, probs, n, backend=backend)
        assert torch.equal(got, soft_label_sum(idx, probs, n, backend="torch"))
    past_end = index.clone()
    past_end[at:] = n  # sorted, but leaves [0, N) from `at`
    for w in (None, weights):
        with pytest.raises(ValueError, match=rf"index\[{at}\] = {n} is outside"):
            vote_histogram(past_end, labels, n, c, weights=w, backend=backend)
    with pytest.raises(ValueError, match=rf"index\[{at}\] = {n} is outside"):
        soft_label_sum(past_end, probs, n, backend=backend)
    bad_labels = labels.clone()
    bad_labels[at] = c
    for w in (None, weights):
        with pytest.raises(ValueError, match=rf"labels\[{at}\] = {c} is outside"):
            vote_histogram(index, bad_labels, n, c, weights=w, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_leading_minus_one_in_sorted_input(backend):
    """Sorted input padded with -1 (the grouped path's first answer) is an error,
    not votes silently added to the first real row."""
    _backend_ok(backend, "cpu")
    index, labels = torch.tensor([-1, -1, 0, 0, 1, 2]), torch.tensor([0, 1, 1, 0, 1, 1])
    with pytest.raises(ValueError, match=r"index\[0\] = -1"):
        vote_histogram(index, labels, 3, 2, backend=backend)
    with pytest.raises(ValueError, match=r"index\[0\] = -1"):
        vote_histogram(index, labels, 3, 2, weights=torch.ones(6), backend=backend)
    with pytest.raises(ValueError, match=r"index\[0\] = -1"):
        soft_label_sum(index, torch.full((6, 2), 0.5), 3, backend=backend)
    big = torch.cat([torch.full((10,), -1), torch.arange(1000).repeat_interleave(100)])
    with pytest.raises(ValueError, match=r"index\[0\] = -1"):
        vote_histogram(
            big, torch.zeros_like(big), 1000, 2, weights=torch.ones(len(big)), backend=backend
        )


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "unordered"])
def test_weight_checks_under_denormals_are_zero(grouped):
    """In a thread that reads denormals as zero (torch.set_flush_denormal), -1e-45
    is -0 to every float comparison: the C++ checks must treat it the same way on
    every path (a bit-level scan and a float fallback once disagreed there and
    lost the largest weight, so the fixed-point sums overflowed), and agree with
    the torch backend in the same mode."""
    n = 70_000
    g = torch.Generator().manual_seed(0)
    index = torch.arange(n) if grouped else torch.randperm(n, generator=g)
    labels = torch.zeros(n, dtype=torch.long)
    weights = torch.rand(n, generator=g)
    weights[[1, 2]] = torch.tensor([1e30, -1e-45])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernel then runs on this thread, whose flag is set
    try:
        assert torch.set_flush_denormal(True)
        got = vote_histogram(index, labels, n, 1, weights=weights, backend="cpu")
        want = vote_histogram(index, labels, n, 1, weights=weights, backend="torch")
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    assert torch.equal(got, want)
    assert float(got[index[1], 0]) == pytest.approx(1e30, rel=1e-6)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_bad_probabilities(backend):
    _backend_ok(backend, "cpu")
    probs = torch.rand(4, 3)
    probs[2, 1] = float("inf")
    with pytest.raises(ValueError, match=r"probs\[2, 1\] = inf"):
        soft_label_sum(torch.tensor([0, 1, 1, 0]), probs, 2, backend=backend)
    with pytest.raises(ValueError, match=r"index\[3\] = 7"):
        soft_label_sum(torch.tensor([0, 1, 1, 7]), torch.rand(4, 3), 2, backend=backend)


@pytest.mark.parametrize(
    ("call", "err", "match"),
    [
        (
            lambda: vote_histogram(torch.tensor([0, 1]), torch.tensor([0]), 2, 2),
            ValueError,
            "labels has 1 entries but index has 2",
        ),
        (
            lambda: vote_histogram(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 2, 2),
            TypeError,
            "index must be int32 or int64",
        ),
        (
            lambda: vote_histogram(torch.tensor([[0, 1]]), torch.tensor([0, 1]), 2, 2),
            ValueError,
            "index must be 1-D",
        ),
        (
            lambda: vote_histogram(torch.tensor([0, 1]), torch.tensor([0, 1]), 2, 0),
            ValueError,
            "num_classes must be an int >= 1",
        ),
        (
            lambda: vote_histogram(torch.tensor([0, 1]), torch.tensor([0, 1]), -1, 2),
            ValueError,
            "num_inputs must be an int >= 0",
        ),
        (
            lambda: vote_histogram(
                torch.tensor([0, 1]), torch.tensor([0, 1]), 2, 2, weights=torch.ones(3)
            ),
            ValueError,
            r"weights has shape \(3,\), expected \(2,\)",
        ),
        (
            lambda: vote_histogram(
                torch.tensor([0, 1]), torch.tensor([0, 1]), 2, 2, weights=torch.ones(2).double()
            ),
            TypeError,
            "float64",
        ),
        (
            lambda: vote_histogram(
                torch.tensor([0, 1]), torch.tensor([0, 1]), 2, 2, dtype=torch.float32
            ),
            TypeError,
            "dtype must be",
        ),
        (
            lambda: vote_histogram(torch.tensor([0]), torch.tensor([0]), 0, 2),
            ValueError,
            "num_inputs is 0",
        ),
        (
            lambda: vote_histogram(
                torch.tensor([0, 1]), torch.tensor([0, 1]), 2, 2, backend="cuda"
            ),
            Exception,
            "cuda",
        ),
        (
            lambda: soft_label_sum(torch.tensor([0, 1]), torch.rand(2), 2),
            ValueError,
            r"probs must be a \(M, C\)",
        ),
        (
            lambda: soft_label_sum(torch.tensor([0, 1]), torch.rand(3, 2), 2),
            ValueError,
            "probs has shape",
        ),
        (lambda: aggregate_top1(torch.ones(3)), ValueError, r"hist must be an \(N, C\)"),
        (lambda: aggregate_top1(torch.tensor([[float("nan"), 1.0]])), ValueError, "NaN"),
    ],
)
def test_bad_arguments(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_empty_output_shapes():
    e = torch.zeros(0, dtype=torch.int64)
    assert vote_histogram(e, e, 0, 3).shape == (0, 3)
    assert soft_label_sum(e, torch.zeros(0, 2), 4).tolist() == [[0.0, 0.0]] * 4


@pytest.mark.parametrize("weighted", [False, True], ids=["counts", "weighted"])
def test_partitioned_path_with_wide_cells(weighted):
    """More than 2^16 classes: the C++ partition carries 32-bit cell ids."""
    _backend_ok("cpu", "cpu")
    gen = torch.Generator().manual_seed(11)
    m, n, c = 70_001, 30, 70_000
    index = torch.randint(0, n, (m,), generator=gen)
    labels = torch.randint(0, c, (m,), generator=gen)
    weights = torch.rand(m, generator=gen) if weighted else None
    got = vote_histogram(index, labels, n, c, weights=weights, backend="cpu")
    want = vote_histogram(index, labels, n, c, weights=weights, backend="torch")
    assert torch.equal(got, want)


def test_triton_soft_labels_name_the_grid_limit():
    """More than 65535 blocks of 64 classes do not fit the soft-label kernel's grid:
    the triton backend says so instead of failing at launch."""
    pytest.importorskip("triton", reason="the grid limit is the triton backend's own check")
    from noiseforge.ops import registry
    from noiseforge.ops.aggregate import OP, _AggPlan

    index = torch.zeros(0, dtype=torch.int64)
    wide = _AggPlan(
        "soft", index, None, torch.zeros(0, 65535 * 64 + 1), 3, 65535 * 64 + 1, torch.int64
    )
    assert any("grid" in why for why in registry.why_not(OP, "triton", wide))
    narrow = _AggPlan("soft", index, None, torch.zeros(0, 65535 * 64), 3, 65535 * 64, torch.int64)
    assert not any("grid" in why for why in registry.why_not(OP, "triton", narrow))


# --------------------------------------------------------------------------- fused top-1


def _fields_equal(a, b):
    return all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("backend", "device"), backend_devices("vote_histogram"))
@pytest.mark.parametrize("case", CASES)
def test_fused_top1_equals_reference(backend, device, case):
    """aggregate_labels: every backend gives the torch backend's bits; counts give
    exactly aggregate_top1(vote_histogram(...)); sums give its labels and tops,
    and shares/margins within two float32 ulps of it (their total is the exact
    fixed-point total, rounded, not a float32 sum of rounded cells)."""
    _backend_ok(backend, device)
    index, labels, weights, probs, n, c = _case(case, torch.Generator().manual_seed(len(case)))
    index, labels = index.to(device), labels.to(device)
    weights, probs = weights.to(device), probs.to(device)
    calls = [
        (dict(labels=labels, num_classes=c), lambda: vote_histogram(index, labels, n, c)),
        (
            dict(labels=labels, num_classes=c, weights=weights),
            lambda: vote_histogram(index, labels, n, c, weights=weights),
        ),
        (dict(probs=probs), lambda: soft_label_sum(index, probs, n)),
    ]
    for kwargs, table in calls:
        got = aggregate_labels(index, n, backend=backend, **kwargs)
        assert _fields_equal(got, aggregate_labels(index, n, backend="torch", **kwargs))
        unfused = aggregate_top1(table())
        assert torch.equal(got.label.cpu(), unfused.label.cpu())
        assert torch.equal(got.top.cpu(), unfused.top.cpu())
        if "weights" in kwargs or "probs" in kwargs:
            assert got.top.dtype == torch.float32
            for f in ("share", "margin"):
                a, b = getattr(got, f).cpu(), getattr(unfused, f).cpu()
                assert torch.allclose(a, b, rtol=2.5e-7, atol=0.0), f
        else:
            assert got.top.dtype == torch.int64 and _fields_equal(got, unfused)


def test_fused_top1_ties_empty_rows_and_one_class():
    index = torch.tensor([0, 0, 0, 0, 2, 2, 2])
    labels = torch.tensor([3, 1, 1, 3, 0, 2, 2])
    for backend in ("torch", "cpu"):
        t = aggregate_labels(index, 4, labels=labels, num_classes=4, backend=backend)
        assert t.label.tolist() == [1, -1, 2, -1]  # the tie 1 vs 3 goes to class 1
        assert t.top.tolist() == [2, 0, 2, 0]
        third = torch.tensor(1.0) / torch.tensor(3.0)
        assert torch.equal(
            t.share,
            torch.stack([torch.tensor(0.5), torch.tensor(0.0), 2 * third, torch.tensor(0.0)]),
        )
        assert torch.equal(
            t.margin, torch.stack([torch.tensor(0.0), torch.tensor(0.0), third, torch.tensor(0.0)])
        )  # a tie has margin 0
        one = aggregate_labels(index, 3, labels=torch.zeros(7, dtype=torch.int64), num_classes=1)
        assert one.label.tolist() == [0, -1, 0] and one.margin.tolist() == [1.0, 0.0, 1.0]
    empty = aggregate_labels(torch.zeros(0, dtype=torch.int64), 0, probs=torch.zeros(0, 5))
    assert all(x.shape == (0,) for x in empty)


_BIG_TOP1 = """
import resource, sys, torch
from noiseforge.ops import aggregate_labels
g = torch.Generator().manual_seed(5)
m, n, c = 150_000, 700_000, 5000
index = torch.randint(0, n, (m,), generator=g)
if sys.argv[1] == "grouped":
    index = index.sort().values
labels = torch.randint(0, 40, (m,), generator=g) * 125
weights = torch.rand(m, generator=g)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
aggregate_labels(index, n, labels=labels, num_classes=c, backend="cpu")
aggregate_labels(index, n, labels=labels, num_classes=c, weights=weights, backend="cpu")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("sort", [False, True], ids=["unordered", "grouped"])
def test_fused_top1_with_a_table_too_large_to_build(sort):
    """N = 700k inputs x C = 5000 classes (an int64 table of 28 GB): the cpu
    backend's fused path reduces a few rows at a time -- its peak memory (in a
    fresh process) stays far below the table's -- and agrees with per-input
    bincounts on sampled inputs. (Unordered, more than 2^16 row blocks of the
    L2 size: the sparse path widens its blocks.)"""
    import subprocess
    import sys

    mode = "grouped" if sort else "unordered"
    run = subprocess.run(
        [sys.executable, "-c", _BIG_TOP1, mode], capture_output=True, text=True, check=True
    )
    grown_kib = int(run.stdout.split()[-1])
    assert grown_kib < 1_000_000, f"peak memory grew by {grown_kib} KiB"
    g = torch.Generator().manual_seed(5)
    m, n, c = 150_000, 700_000, 5000
    index = torch.randint(0, n, (m,), generator=g)
    if sort:
        index = index.sort().values
    labels = torch.randint(0, 40, (m,), generator=g) * 125  # few distinct classes: ties and wins
    weights = torch.rand(m, generator=g)
    counts = aggregate_labels(index, n, labels=labels, num_classes=c, backend="cpu")
    summed = aggregate_labels(
        index, n, labels=labels, num_classes=c, weights=weights, backend="cpu"
    )
    shift = fixed_point_shift(float(weights.max()), m)
    for r in [*torch.randint(0, n, (200,), generator=g).tolist(), int(index[0])]:
        mine = index == r
        h = torch.bincount(labels[mine], minlength=c)
        if int(h.sum()) == 0:
            assert int(counts.label[r]) == -1 and int(summed.label[r]) == -1
            continue
        assert int(counts.label[r]) == int(h.argmax()) and int(counts.top[r]) == int(h.max())
        q = torch.round(weights[mine].double() * 2.0**shift).long()
        sums = torch.zeros(c, dtype=torch.int64).index_add_(0, labels[mine], q)
        vals = (sums.double() * 2.0**-shift).float()
        assert int(summed.label[r]) == int(vals.argmax()) and float(summed.top[r]) == float(
            vals.max()
        )


@pytest.mark.parametrize("order", ["grouped", "unordered"])
def test_fused_top1_sparse_rows_edge_cases(order):
    """With >= 512 classes the cpu backend reduces only the touched cells of a
    row: rows that touch every class (with and without a tie), rows whose votes
    all weigh 0, a winner whose class id is above the runner-up's, and ties
    between classes touched in descending order must match the torch backend."""
    c = 600
    rows = [
        [*range(c), 7],  # every class once, class 7 twice
        list(range(c)),  # every class once: a 600-way tie, margin 0
        [5, 3, 3, 5],  # tie between 3 and 5, touched 5 first
        [599, 598, 599],
        [42],
        [9, 9, 1],  # (weights 0 below)
    ]
    index = torch.cat([torch.full((len(r),), i) for i, r in enumerate(rows)])
    labels = torch.cat([torch.tensor(r) for r in rows])
    weights = torch.rand(len(index), generator=torch.Generator().manual_seed(7))
    weights[index == 5] = 0.0
    if order == "unordered":
        perm = torch.randperm(len(index), generator=torch.Generator().manual_seed(8))
        index, labels, weights = index[perm], labels[perm], weights[perm]
    n = len(rows) + 2  # two inputs without answers
    for w in (None, weights):
        got = aggregate_labels(index, n, labels=labels, num_classes=c, weights=w, backend="cpu")
        want = aggregate_labels(index, n, labels=labels, num_classes=c, weights=w, backend="torch")
        assert _fields_equal(got, want)
    counts = aggregate_labels(index, n, labels=labels, num_classes=c, backend="cpu")
    assert counts.label.tolist() == [7, 0, 3, 599, 42, 9, -1, -1]
    assert counts.margin[1] == 0.0 and counts.margin[2] == 0.0
    summed = aggregate_labels(index, n, labels=labels, num_classes=c, weights=weights)
    assert int(summed.label[5]) == -1  # votes that all weigh nothing


@pytest.mark.parametrize("index", [[0, 0], [1, 0]], ids=["grouped", "unordered"])
def test_fused_top1_out_of_memory_is_an_error(index):
    """2^40 classes: the per-thread row cannot be allocated -- a MemoryError that
    says why, not an abort from inside a parallel region."""
    with pytest.raises(
        MemoryError, match="not enough memory to aggregate 2 answers over 1099511627776 classes"
    ):
        aggregate_labels(
            torch.tensor(index), 2, labels=torch.tensor([1, 1]), num_classes=1 << 40, backend="cpu"
        )


def test_fused_top1_outputs_ignore_the_default_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        t = aggregate_labels(
            torch.tensor([0, 0, 1]), 2, labels=torch.tensor([1, 1, 0]), num_classes=3, backend="cpu"
        )
    finally:
        torch.set_default_dtype(old)
    assert t.share.dtype == t.margin.dtype == torch.float32
    assert t.share.tolist() == [1.0, 1.0] and t.label.tolist() == [1, 0]


def test_fused_top1_with_two_to_the_24_classes_unordered():
    c = (1 << 24) + 3  # a partition block is one row; its cells are the classes
    index, labels = torch.tensor([7, 0, 7, 3]), torch.tensor([c - 1, 5, c - 1, 0])
    t = aggregate_labels(index, 8, labels=labels, num_classes=c, backend="cpu")
    assert t.label.tolist() == [5, -1, -1, 0, -1, -1, -1, c - 1]
    assert t.top.tolist() == [1, 0, 0, 1, 0, 0, 0, 2]


def test_fused_top1_soft_labels_with_many_classes():
    g = torch.Generator().manual_seed(6)
    m, n, c = 4000, 300, 5000  # more classes than the table path partitions
    index = torch.randint(0, n, (m,), generator=g)
    probs = torch.softmax(torch.randn(m, c, generator=g) * 4, dim=1)
    got = aggregate_labels(index, n, probs=probs, backend="cpu")
    assert _fields_equal(got, aggregate_labels(index, n, probs=probs, backend="torch"))


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_fused_top1_bad_input(backend):
    _backend_ok(backend, "cpu")
    index, labels = torch.tensor([0, 1, 7, 1]), torch.tensor([0, 1, 1, 5])
    with pytest.raises(ValueError, match=r"index\[2\] = 7 is outside"):
        aggregate_labels(index, 3, labels=labels, num_classes=2, backend=backend)
    with pytest.raises(ValueError, match=r"labels\[3\] = 5 is outside"):
        aggregate_labels(index.clamp(max=2), 3, labels=labels, num_classes=2, backend=backend)
    with pytest.raises(ValueError, match=r"weights\[1\] = "):
        aggregate_labels(
            index.clamp(max=2),
            3,
            labels=labels.clamp(max=1),
            num_classes=2,
            weights=torch.tensor([1.0, float("inf"), 1.0, 1.0]),
            backend=backend,
        )
    with pytest.raises(ValueError, match=r"probs\[1, 0\] = "):
        aggregate_labels(
            index.clamp(max=2),
            3,
            probs=torch.tensor([[1.0], [-1.0], [0.0], [0.0]]),
            backend=backend,
        )
    with pytest.raises(ValueError, match="either probs"):
        aggregate_labels(index, 8, labels=labels, num_classes=6, probs=torch.ones(4, 6))
    with pytest.raises(ValueError, match="give labels and num_classes"):
        aggregate_labels(index, 8, labels=labels)
