"""The fused LDP noise op: every backend against the torch reference on the
same random words, the random stream rules, and bad input."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from noiseforge.ops import BackendUnavailableError, ldp_noise, ldp_noise_calibration, registry
from noiseforge.ops.ldp_noise import plan_ldp_noise
from noiseforge.random import PhiloxGenerator
from tests.support.backends import (
    assert_close_report,
    backend_devices,
    require_backend,
    require_device,
)

MECHANISMS = [
    pytest.param("laplace", {}, id="laplace"),
    pytest.param("gaussian", {"delta": 1e-5}, id="gaussian"),
    pytest.param("discrete_laplace", {}, id="discrete"),
]
SHAPES = [(5, 123), (1, 1), (3, 7, 5), (0, 4), (4, 0), (2, 1, 1, 3)]


def _input(shape, dtype, device, gen):
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(device)
    # values beyond the domain [-1, 2) exercise the clipping
    return (torch.rand(shape, generator=gen) * 4.0 - 1.5).to(dtype).to(device)


def _bounds(dtype):
    return (0, 255) if dtype == torch.uint8 else (-1.0, 2.0)


def _run(x, backend, mechanism, kw, **extra):
    lo, hi = _bounds(x.dtype)
    args = dict(epsilon=1.5, lower=lo, upper=hi, mechanism=mechanism, copies=3, seed=11, offset=5)
    args.update(kw)
    args.update(extra)
    return ldp_noise(x, backend=backend, **args)


def _inputs_for_registry(x, mechanism, kw):
    lo, hi = _bounds(x.dtype)
    return plan_ldp_noise(x, mechanism=mechanism, epsilon=1.5, lower=lo, upper=hi, copies=3, **kw)


@pytest.mark.parametrize(("backend", "device"), backend_devices("ldp_noise"))
@pytest.mark.parametrize(("mechanism", "kw"), MECHANISMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, device, mechanism, kw, dtype, shape):
    require_device(device)
    # crc32, not hash(): the same inputs in every process (PYTHONHASHSEED)
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, str(dtype))).encode()))
    x = _input(shape, dtype, device, gen)
    rec = require_backend("ldp_noise", backend, _inputs_for_registry(x, mechanism, kw))
    got = _run(x, backend, mechanism, kw)
    want = _run(x, "torch", mechanism, kw)
    assert got.shape == (shape[0], 3, *shape[1:])
    if got.dtype.is_floating_point:
        atol, rtol = rec.tolerance_for(device).get(got.dtype, (0.0, 0.0))
    else:
        atol, rtol = 0.0, 0.0  # integer outputs are exact on every backend
    assert_close_report(got, want, atol, rtol)


@pytest.mark.parametrize(("backend", "device"), backend_devices("ldp_noise"))
@pytest.mark.parametrize(("mechanism", "kw"), MECHANISMS)
def test_non_contiguous_and_per_feature_bounds(backend, device, mechanism, kw):
    require_device(device)
    base = torch.rand(9, 6, generator=torch.Generator().manual_seed(0)).to(device) * 3 - 1
    x = base.t()[:, ::2]  # (6, 5) with strides (1, 12)
    assert not x.is_contiguous()
    lower = torch.linspace(-1.0, 0.0, 5)
    upper = torch.linspace(0.5, 2.0, 5)
    args = dict(
        epsilon=0.7, lower=lower, upper=upper, mechanism=mechanism, copies=2, seed=3, offset=0, **kw
    )
    plan = plan_ldp_noise(x, **{k: v for k, v in args.items() if k not in ("seed", "offset")})
    rec = require_backend("ldp_noise", backend, plan)
    got = ldp_noise(x, backend=backend, **args)
    want = ldp_noise(x.contiguous(), backend="torch", **args)
    atol, rtol = rec.tolerance_for(device).get(torch.float32, (0.0, 0.0))
    assert_close_report(got, want, atol, rtol)
    lo = lower.to(device).view(1, 1, 5)
    hi = upper.to(device).view(1, 1, 5)
    assert bool(((got >= lo) & (got <= hi + 1e-6)).all()), "clamped output left its domain"


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_no_clamp_keeps_unbounded_noise(backend):
    x = torch.full((200, 4), 0.5)
    y = ldp_noise(x, epsilon=0.5, lower=0.0, upper=1.0, clamp=False, seed=1, backend=backend)
    assert float(y.min()) < 0.0 and float(y.max()) > 1.0


def test_record_unit_scales_noise_by_the_l1_sensitivity():
    x = torch.zeros(1, 10)
    feat = ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, clamp=False, seed=4, offset=0)
    rec = ldp_noise(
        x, epsilon=1.0, lower=0.0, upper=1.0, clamp=False, seed=4, offset=0, unit="record"
    )
    # same words, scale 10x larger: 1 / eps vs sum of widths / eps
    torch.testing.assert_close(rec, feat * 10.0, rtol=1e-6, atol=0)


def test_auto_picks_native_cpu_and_matches_reference():
    x = torch.rand(8, 33)
    auto = ldp_noise(x, epsilon=2.0, lower=0.0, upper=1.0, seed=9, offset=0)
    ref = ldp_noise(x, epsilon=2.0, lower=0.0, upper=1.0, seed=9, offset=0, backend="torch")
    assert torch.equal(auto, ref)


def test_env_var_sets_the_default_backend(monkeypatch):
    monkeypatch.setenv("NOISEFORGE_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        ldp_noise(torch.rand(2, 3), epsilon=1.0, lower=0.0, upper=1.0)
    monkeypatch.setenv("NOISEFORGE_BACKEND", "fpga")
    with pytest.raises(ValueError, match="NOISEFORGE_BACKEND"):
        ldp_noise(torch.rand(2, 3), epsilon=1.0, lower=0.0, upper=1.0)


def test_numpy_in_numpy_out():
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    y = ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, copies=2, seed=2, offset=0)
    assert isinstance(y, np.ndarray) and y.shape == (4, 2, 6) and y.dtype == np.float32
    assert np.array_equal(
        y,
        ldp_noise(
            torch.from_numpy(x), epsilon=1.0, lower=0.0, upper=1.0, copies=2, seed=2, offset=0
        ).numpy(),
    )


def test_output_dtypes():
    u8 = torch.randint(0, 256, (3, 5), dtype=torch.uint8)
    assert ldp_noise(u8, epsilon=1.0, lower=0, upper=255).dtype == torch.float32
    assert (
        ldp_noise(u8, epsilon=1.0, lower=0, upper=255, mechanism="discrete_laplace").dtype
        == torch.uint8
    )
    # a non-unit grid on uint8 input cannot stay uint8
    y = ldp_noise(u8, epsilon=1.0, lower=0, upper=255, mechanism="discrete_laplace", levels=16)
    assert y.dtype == torch.float32
    assert (
        ldp_noise(torch.rand(2, 2).half(), epsilon=1.0, lower=0.0, upper=1.0).dtype == torch.float16
    )


def test_discrete_outputs_lie_on_the_grid():
    x = torch.rand(50, 20) * 2 - 0.5
    y = ldp_noise(
        x,
        epsilon=2.0,
        lower=-0.5,
        upper=1.5,
        mechanism="discrete_laplace",
        levels=9,
        copies=4,
        seed=1,
    )
    steps = (y - (-0.5)) / (2.0 / 8)
    assert torch.allclose(steps, steps.round(), atol=1e-5)
    assert float(y.min()) >= -0.5 and float(y.max()) <= 1.5 + 1e-6


# ------------------------------------------------------------------ per-input keys


def _keys(n, salt=0):
    # full 64-bit keys, negative int64 (>= 2^63 as uint64) included
    g = torch.Generator().manual_seed(1000 + n + salt)
    return torch.randint(-(2**63), 2**63 - 1, (n,), dtype=torch.int64, generator=g)


@pytest.mark.parametrize(("backend", "device"), backend_devices("ldp_noise"))
@pytest.mark.parametrize(("mechanism", "kw"), MECHANISMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("shape", [(5, 123), (1, 1), (3, 7, 5), (0, 4), (4, 0)], ids=str)
def test_per_input_keys_match_reference(backend, device, mechanism, kw, dtype, shape):
    require_device(device)
    gen = torch.Generator().manual_seed(zlib.crc32(repr(("keys", shape, str(dtype))).encode()))
    x = _input(shape, dtype, device, gen)
    rec = require_backend("ldp_noise", backend, _inputs_for_registry(x, mechanism, kw))
    keys = _keys(shape[0])
    got = _run(x, backend, mechanism, kw, seed=None, offset=3, keys=keys)
    want = _run(x, "torch", mechanism, kw, seed=None, offset=3, keys=keys)
    atol, rtol = (
        rec.tolerance_for(device).get(got.dtype, (0.0, 0.0))
        if got.dtype.is_floating_point
        else (0, 0)
    )
    assert_close_report(got, want, atol, rtol)


@pytest.mark.parametrize(("backend", "device"), backend_devices("ldp_noise"))
def test_an_inputs_noise_depends_on_its_key_only(backend, device):
    require_device(device)
    op = registry.get_op("ldp_noise")
    require_backend("ldp_noise", backend, op.example_inputs(torch.device(device)))
    base = (torch.rand(33, 40, generator=torch.Generator().manual_seed(4)) * 3 - 1).to(device).t()
    assert not base.is_contiguous()  # (40, 33) with strides (1, 40)
    x = base.contiguous()
    keys = _keys(40)
    args = dict(epsilon=0.7, lower=-1.0, upper=2.0, copies=2, backend=backend)
    whole = ldp_noise(base, keys=keys, **args)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    part = ldp_noise(x[perm[:13]], keys=keys[perm[:13]], **args)
    assert torch.equal(part.cpu(), whole[perm[:13]].cpu()), "position in the batch is irrelevant"
    # one input alone: counters from offset (0) of its own stream, as in the batch
    one = ldp_noise(x[5:6], keys=keys[5:6], offset=0, **args)
    assert torch.equal(one.cpu(), whole[5:6].cpu())
    other = ldp_noise(x[5:6], keys=keys[5:6] ^ 1, **args)
    assert (other != one).float().mean() > 0.5, "another key, another stream"


def test_per_input_keys_are_validated():
    x = torch.rand(3, 4)
    with pytest.raises(ValueError, match="not both"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, keys=_keys(3), seed=1)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, keys=_keys(4))
    with pytest.raises(TypeError, match="int64"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, keys=torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="offset"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, keys=_keys(3), offset=-1)
    u = np.array([2**64 - 1, 0, 7], dtype=np.uint64)  # uint64 keys are taken as their bits
    a = ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, keys=u)
    b = ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, keys=torch.tensor([-1, 0, 7]))
    assert torch.equal(a, b)


# ------------------------------------------------------------------ the random stream


@pytest.mark.parametrize(
    ("mechanism", "d", "per_input"),
    [
        ("laplace", 4, 2),  # 2 copies x 4 features: 8 elements, 4 per counter
        ("gaussian", 5, 3),  # 10 elements: the last counter's last two words unused
        ("discrete_laplace", 4, 8),  # a counter per element
    ],
)
def test_calls_advance_the_stream(mechanism, d, per_input):
    x = torch.rand(3, d)
    kw = dict(epsilon=1.0, lower=0.0, upper=1.0, copies=2, mechanism=mechanism)
    if mechanism == "gaussian":
        kw["delta"] = 1e-5
    gen = PhiloxGenerator(seed=77)
    a = ldp_noise(x, generator=gen, **kw)
    assert gen.offset == 3 * per_input
    b = ldp_noise(x, generator=gen, **kw)
    assert gen.offset == 6 * per_input
    assert not torch.equal(a, b)
    # the second call used the next 3 * per_input counters: replay them
    replay = ldp_noise(x, seed=77, offset=3 * per_input, **kw)
    assert torch.equal(b, replay)
    # input n's counters start at offset + n * per_input: one input alone replays its rows
    for n in range(3):
        one = ldp_noise(x[n : n + 1], seed=77, offset=(3 + n) * per_input, **kw)
        assert torch.equal(one[0], b[n])


def test_seed_argument_is_reproducible_but_never_repeats_within_a_process():
    x = torch.rand(2, 3)
    a = ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, seed=123456)
    b = ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, seed=123456)
    assert not torch.equal(a, b)


def test_default_stream_is_secret():
    from noiseforge.random import default_generator

    gen = default_generator()
    assert gen.is_secret
    with pytest.raises(PermissionError, match="secret"):
        _ = gen.seed
    assert "secret" in repr(gen)
    x = torch.zeros(2, 3)
    before = gen.offset
    ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, copies=5)
    assert gen.offset == before + 2 * 4  # 15 elements per input: 4 counters of 4 words


def test_forked_child_gets_a_fresh_secret_key():
    """A forked child must not replay the parent's noise (same counters, new key),
    and its native kernels must not hang on the parent's OpenMP pool."""
    import os
    import pickle

    from noiseforge.random import default_generator

    x = torch.zeros(1, 64)
    ldp_noise(x, epsilon=1.0, lower=-100.0, upper=100.0)  # parent pool and stream in use
    gen = default_generator()
    offset = gen.offset
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            y = ldp_noise(x, epsilon=1.0, lower=-100.0, upper=100.0, backend="cpu")
            os.write(write_fd, pickle.dumps((default_generator().offset, y.numpy())))
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        child_offset, child = pickle.loads(f.read())
    os.waitpid(pid, 0)
    parent = ldp_noise(x, epsilon=1.0, lower=-100.0, upper=100.0, backend="cpu").numpy()
    assert child_offset == 16  # the child's stream restarted under a new key (64 / 4 counters)
    assert gen.offset == offset + 16
    assert not np.array_equal(child, parent)


# ------------------------------------------------------------------ bad input


def _ok(**over):
    args = dict(epsilon=1.0, lower=0.0, upper=1.0)
    args.update(over)
    return args


@pytest.mark.parametrize(
    ("x", "kwargs", "err", "match"),
    [
        (torch.tensor([[0.1, float("nan")]]), _ok(), ValueError, "NaN or inf.*index 1"),
        (torch.tensor([[float("inf"), 0.1]]), _ok(), ValueError, "NaN or inf.*index 0"),
        (torch.rand(2, 3), _ok(lower=1.0, upper=1.0), ValueError, "feature 0 has lower"),
        (torch.rand(2, 3), _ok(lower=[0.0, 2.0, 0.0]), ValueError, "feature 1 has lower"),
        (torch.rand(2, 3), _ok(epsilon=0.0), ValueError, "epsilon must be a finite number > 0"),
        (torch.rand(2, 3), _ok(epsilon=-1.0), ValueError, "epsilon"),
        (torch.rand(2, 3), _ok(epsilon=float("inf")), ValueError, "epsilon"),
        (torch.rand(2, 3), _ok(epsilon="1"), TypeError, "epsilon"),
        (torch.rand(2, 3), _ok(mechanism="gaussian"), ValueError, "needs delta"),
        (torch.rand(2, 3), _ok(mechanism="gaussian", delta=1.0), ValueError, "delta must be in"),
        (torch.rand(2, 3), _ok(mechanism="gaussian", delta=-0.1), ValueError, "delta"),
        (torch.rand(2, 3), _ok(delta=1e-5), ValueError, "delta applies to mechanism='gaussian'"),
        (torch.rand(2, 3), _ok(mechanism="exponential"), ValueError, "mechanism must be one of"),
        (torch.rand(2, 3), _ok(unit="pixel"), ValueError, "unit must be"),
        (torch.rand(2, 3).double(), _ok(), TypeError, "float64.*x.float"),
        (torch.arange(6).reshape(2, 3), _ok(), TypeError, "int64"),
        (torch.rand(3), _ok(), ValueError, "batch dimension"),
        (torch.rand(2, 3), _ok(lower=torch.zeros(4)), ValueError, "does not broadcast"),
        (
            torch.rand(2, 3),
            _ok(upper=[1.0, float("nan"), 1.0]),
            ValueError,
            "upper must be finite; feature 1",
        ),
        (torch.rand(2, 3), _ok(copies=0), ValueError, "copies"),
        (
            torch.rand(2, 3),
            _ok(mechanism="discrete_laplace", clamp=False),
            ValueError,
            "always clamps",
        ),
        (torch.rand(2, 3), _ok(mechanism="discrete_laplace", levels=1), ValueError, "levels"),
        (torch.rand(2, 3), _ok(levels=10), ValueError, "levels applies"),
        (torch.rand(2, 3), _ok(offset=3), ValueError, "give seed="),
        (
            torch.rand(2, 3),
            _ok(seed=1, generator=PhiloxGenerator(1)),
            ValueError,
            "either generator",
        ),
        (torch.rand(2, 3), _ok(seed=-5), ValueError, "seed"),
        (torch.rand(2, 3), _ok(backend="gpu"), ValueError, "backend= is 'gpu'"),
        (
            torch.rand(2, 3),
            _ok(backend="cuda"),
            BackendUnavailableError,
            "backend 'cuda' cannot run",
        ),
        (
            torch.rand(2, 3),
            _ok(lower=0.0, upper=1e38, epsilon=1e-3),
            ValueError,
            "too large for float32",
        ),
        (
            torch.rand(2, 3),
            _ok(mechanism="discrete_laplace", epsilon=60.0),
            ValueError,
            "too large for discrete",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(x, kwargs, err, match):
    with pytest.raises(err, match=match):
        ldp_noise(x, **kwargs)


def test_uint8_with_mixed_widths_needs_levels():
    x = torch.zeros(2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="levels= explicitly"):
        ldp_noise(x, epsilon=1.0, lower=0, upper=[255, 100], mechanism="discrete_laplace")


def test_out_buffer_is_checked_and_used():
    x = torch.rand(4, 5)
    out = torch.empty(4, 2, 5)
    y = ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, copies=2, seed=1, offset=0, out=out)
    assert y is out
    assert torch.equal(
        out, ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, copies=2, seed=1, offset=0)
    )
    with pytest.raises(ValueError, match=r"shape \(4, 5\) \(expected \(4, 2, 5\)\)"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, copies=2, out=torch.empty(4, 5))
    with pytest.raises(ValueError, match=r"dtype torch\.float16"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, copies=2, out=torch.empty(4, 2, 5).half())
    with pytest.raises(ValueError, match="non-contiguous"):
        ldp_noise(
            x, epsilon=1.0, lower=0.0, upper=1.0, copies=2, out=torch.empty(5, 2, 4).transpose(0, 2)
        )
    big = torch.rand(4, 1, 5)
    with pytest.raises(ValueError, match="overlaps x"):
        ldp_noise(big[:, 0], epsilon=1.0, lower=0.0, upper=1.0, copies=1, out=big)
    before = x.clone()
    ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0)
    assert torch.equal(x, before), "the op must never modify its input"


def test_wrong_device_out_is_rejected():
    x = torch.rand(2, 3)
    out = torch.empty(2, 1, 3, device="meta")
    with pytest.raises(ValueError, match="device meta"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, out=out)


def test_guarantee_counts_every_copy():
    from noiseforge.ops import ldp_noise_calibration

    x = torch.rand(4, 3)
    one = ldp_noise_calibration(x, epsilon=1.0, lower=0.0, upper=1.0)
    eight = ldp_noise_calibration(x, epsilon=1.0, lower=0.0, upper=1.0, copies=8)
    assert one.epsilon_total == pytest.approx(3.0)
    assert eight.epsilon_total == pytest.approx(24.0)
    assert eight.guarantee.startswith("24-LDP per record (8 copies of 3 each")
    g = ldp_noise_calibration(
        x,
        epsilon=1.0,
        delta=1e-6,
        mechanism="gaussian",
        lower=0.0,
        upper=1.0,
        copies=2,
        unit="record",
    )
    assert g.epsilon_total == pytest.approx(2.0) and g.delta_total == pytest.approx(2e-6)


def test_continuous_scales_round_up_to_float32():
    from noiseforge.ops import ldp_noise_calibration

    cal = ldp_noise_calibration(
        torch.rand(1, 5), epsilon=3.0, lower=0.0, upper=[0.1, 0.2, 0.3, 0.7, 1.1]
    )
    widths = np.array([0.1, 0.2, 0.3, 0.7, 1.1], dtype=np.float32).astype(np.float64) - 0.0
    assert np.all(cal.scale.astype(np.float64) >= widths / 3.0)


def test_user_secret_generator_is_rekeyed_in_a_forked_child():
    import os
    import pickle

    gen = PhiloxGenerator()
    x = torch.zeros(1, 32)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            y = ldp_noise(x, epsilon=1.0, lower=-50.0, upper=50.0, generator=gen, backend="torch")
            os.write(write_fd, pickle.dumps(y.numpy()))
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        child = pickle.loads(f.read())
    os.waitpid(pid, 0)
    parent = ldp_noise(x, epsilon=1.0, lower=-50.0, upper=50.0, generator=gen, backend="torch")
    assert not np.array_equal(child, parent.numpy())


def test_numpy_scalars_are_accepted():
    y = ldp_noise(
        torch.rand(2, 3),
        epsilon=np.float32(2.0),
        lower=np.float64(0.0),
        upper=1.0,
        copies=np.int64(2),
        seed=1,
        offset=0,
    )
    assert y.shape == (2, 2, 3)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        (dict(clamp="no"), TypeError, "clamp must be True or False"),
        (dict(generator=5), TypeError, "generator must be a noiseforge.PhiloxGenerator"),
        (dict(generator=torch.Generator()), TypeError, "PhiloxGenerator"),
        (dict(copies=2**62), ValueError, "too many outputs"),
        (dict(mechanism="gaussian", delta=1e-300, epsilon=1e-37), ValueError, "sigma above 1e12"),
    ],
)
def test_more_bad_arguments(kwargs, err, match):
    args = dict(epsilon=1.0, lower=0.0, upper=1.0)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        ldp_noise(torch.rand(2, 3), **args)


def test_unsupported_device_and_wide_uint8_domain():
    with pytest.raises(ValueError, match="meta device"):
        ldp_noise(torch.empty(2, 3, device="meta"), epsilon=1.0, lower=0.0, upper=1.0)
    with pytest.raises(ValueError, match="10001 grid points"):
        ldp_noise(
            torch.zeros(2, 2, dtype=torch.uint8),
            epsilon=1.0,
            lower=0,
            upper=10000,
            mechanism="discrete_laplace",
        )


def test_reference_sqrt_is_correctly_rounded():
    """The Gaussian tail needs an IEEE square root; torch.sqrt is not one on every CPU."""
    from noiseforge.reference.ldp_noise import sqrt_f32

    g = torch.Generator().manual_seed(3)
    x = torch.cat(
        [
            torch.rand(200_000, generator=g) * 40,
            torch.rand(1000, generator=g) * 1e-30,
            torch.tensor([0.0, 1e-45, 1.17549435e-38, 3.4028235e38, 1.0, 2.0, 4.0, 25.0]),
        ]
    )
    expected = torch.from_numpy(np.sqrt(x.numpy()))
    got = sqrt_f32(x)
    bad = (got != expected).nonzero().flatten()
    assert bad.numel() == 0, f"{bad.numel()} roots differ, first at x={x[bad[0]].item()!r}"


@pytest.mark.parametrize(
    ("backend", "device"),
    [p for p in backend_devices("ldp_noise") if p.values[0] == "triton"],
)
@pytest.mark.parametrize(("mechanism", "kw"), MECHANISMS)
def test_triton_64_bit_index_path(backend, device, mechanism, kw, monkeypatch):
    """The Triton kernel divides in 32 bits whenever every index fits (the usual
    case, and the one the other tests take); the 64-bit path, for outputs of 2^31
    elements or more, gives the same values."""
    require_device(device)
    monkeypatch.setenv("NOISEFORGE_LDP_INDEX64", "1")
    gen = torch.Generator().manual_seed(5)
    x = _input((7, 5, 3), torch.float32, device, gen)
    rec = require_backend("ldp_noise", backend, _inputs_for_registry(x, mechanism, kw))
    got = _run(x, backend, mechanism, kw)
    want = _run(x, "torch", mechanism, kw)
    assert_close_report(got, want, *rec.tolerance_for(device).get(got.dtype, (0.0, 0.0)))


# --------------------------------------------------------------------------- hardening (issue 14)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_out_overlapping_a_strided_x_is_refused(backend):
    """x = every other row of a buffer; out = the buffer's second half: 4 of x's 8 rows
    lie inside out. The old check compared numel-long ranges and let it through."""
    base = torch.rand(16, 4)
    before = base.clone()
    x = base[::2]
    out = base[8:].view(8, 1, 4)
    with pytest.raises(ValueError, match=r"out overlaps x in memory: out's bytes \[0x"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, out=out, seed=1, backend=backend)
    assert torch.equal(base, before)
    disjoint = base[:8:2]  # rows 0, 2, 4, 6: their span ends before row 8
    y = ldp_noise(disjoint, epsilon=1.0, lower=0.0, upper=1.0, out=base[8:12].view(4, 1, 4))
    assert y.data_ptr() == base[8].data_ptr() and torch.equal(base[:8], before[:8])


def test_out_overlapping_x_that_the_op_reshapes_by_copy_is_refused():
    """A permuted x that cannot be flattened as a view is copied for the kernels; out
    over the caller's x must still be refused (the copy does not protect x)."""
    base = torch.rand(4, 3, 2)
    x = base.transpose(1, 2)  # (4, 2, 3): reshape(4, 6) copies
    out = base.view(4, 1, 2, 3)
    with pytest.raises(ValueError, match="out overlaps x"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, out=out, seed=1)


def test_out_over_the_same_memory_through_another_storage_is_refused():
    """Two numpy views of one array are two torch storages over the same bytes."""
    arr = np.random.default_rng(0).random(40, dtype=np.float32)
    x = torch.from_numpy(arr[:20]).view(5, 4)
    out = torch.from_numpy(arr[16:36]).view(5, 1, 4)
    assert x.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
    with pytest.raises(ValueError, match="out overlaps x"):
        ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, out=out, seed=1)


def test_out_overlapping_keys_is_refused():
    keys = torch.zeros(6, dtype=torch.int64)
    out = keys.view(torch.float32).view(6, 1, 2)  # 12 float32 over the 6 keys
    with pytest.raises(ValueError, match="out overlaps keys in memory"):
        ldp_noise(torch.rand(6, 2), epsilon=1.0, lower=0.0, upper=1.0, keys=keys, out=out)


@pytest.mark.parametrize("epsilon", [1e-16, 1e-17, 1e-300, 5e-324])
@pytest.mark.parametrize("unit", ["feature", "record"])
def test_discrete_laplace_with_a_tiny_epsilon_is_a_clear_error(epsilon, unit):
    """alpha = exp(-eps / (levels - 1)) rounds to 1 and the uint64 table overflowed
    (OverflowError: Python int too large to convert to C long)."""
    with pytest.raises(
        ValueError,
        match=r"epsilon=.* is too small for discrete_laplace.*raise epsilon or use fewer levels",
    ):
        ldp_noise(
            torch.rand(2, 3),
            epsilon=epsilon,
            lower=0.0,
            upper=1.0,
            mechanism="discrete_laplace",
            unit=unit,
            seed=1,
        )


def test_discrete_laplace_near_the_smallest_epsilon_still_runs():
    y = ldp_noise(
        torch.rand(3, 4), epsilon=1e-10, lower=0.0, upper=1.0, mechanism="discrete_laplace", seed=1
    )
    assert bool(((y == 0) | (y == 1) | ((y > 0) & (y < 1))).all())
    cal = ldp_noise_calibration(
        torch.rand(3, 4), epsilon=1e-10, lower=0.0, upper=1.0, mechanism="discrete_laplace"
    )
    assert cal.epsilon_per_feature <= 1e-10 * 1.01


@pytest.mark.parametrize("eps", [1e-11, 1e-12, 1e-13, 3e-14])
def test_discrete_laplace_refuses_an_epsilon_its_tables_cannot_honour(eps):
    """Below ~1e-10 per grid step the tables' rounding makes the real loss larger than the
    epsilon asked for (1.13x at 1e-13, 2.8e8x at 1e-11 with 256 levels): refused, not
    silently charged."""
    with pytest.raises(ValueError, match="too small for discrete_laplace"):
        ldp_noise(torch.rand(3, 4), epsilon=eps, lower=0.0, upper=1.0, mechanism="discrete_laplace")


@pytest.mark.parametrize(
    ("lower", "upper", "levels", "match"),
    [
        (-3e38, 3e38, None, r"uint8 domain \[-3e\+38, 3e\+38\] has 6e\+38 grid points"),
        (0.0, 3.4e38, None, "grid points, more than discrete_laplace supports"),
        (
            -3e38,
            3e38,
            4097,
            r"the domain \[-3e\+38, 3e\+38\] of feature 0 is wider than float32's range",
        ),
        (0.0, 1e-42, 256, r"grid step .* is below float32's normal range"),
    ],
)
def test_discrete_laplace_domains_beyond_float32(lower, upper, levels, match):
    """uint8 input with bounds near float32's limit raised OverflowError (an infinite
    float32 width); a width beyond float32 or a zero grid step made the kernels
    compute inf/NaN grid positions."""
    with pytest.raises(ValueError, match=match):
        ldp_noise(
            torch.zeros(2, 3, dtype=torch.uint8),
            epsilon=1.0,
            lower=lower,
            upper=upper,
            mechanism="discrete_laplace",
            levels=levels,
            seed=1,
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(epsilon=10**400), "epsilon must be a finite number > 0, got an integer of 1329 bits"),
        (
            dict(mechanism="gaussian", epsilon=1.0, delta=10**400),
            "delta must be a finite number > 0, got an integer",
        ),
        (dict(epsilon=1.0, lower=-1e300), r"lower must lie within float32's range.*-1e\+300"),
        (dict(epsilon=1.0, upper=np.array([1.0, 1e39, 2.0])), r"upper .* feature 1 is 1e\+39"),
        (dict(epsilon=5e-324), r"the noise scale inf is too large for float32"),
        (dict(epsilon=1e-40, unit="record"), "too large for float32"),
        (dict(mechanism="gaussian", delta=1e-300, epsilon=1e-300), "sigma above 1e12"),
        (dict(epsilon=1.0, unit=["feature"]), "unit must be 'feature' or 'record'"),
        (dict(epsilon=1.0, mechanism=["laplace"]), "mechanism must be one of"),
    ],
)
def test_overflowing_arguments_are_clear_errors(kwargs, match):
    """Every float overflow on the way to the noise scale is a ValueError, without warnings."""
    import warnings

    args = dict(lower=0.0, upper=1.0, seed=1)
    args.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from an overflowing numpy op
        with pytest.raises(ValueError, match=match):
            ldp_noise(torch.rand(2, 3), **args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_outputs_that_would_overflow_are_refused(dtype):
    """float16/bfloat16 outputs beyond their dtype's range became inf."""
    limit = float(torch.finfo(dtype).max)
    x = torch.rand(3, 4).to(dtype)
    upper = limit * 1.003  # within float32; inf in the output dtype
    with pytest.raises(ValueError, match=rf"beyond the largest {dtype}.*give x as float32"):
        ldp_noise(x, epsilon=1e6, lower=0.0, upper=upper, seed=1)
    assert ldp_noise(x.float(), epsilon=1e6, lower=0.0, upper=upper, seed=1).isfinite().all()
    if dtype == torch.float16:  # unclamped noise beyond the range (bfloat16's is float32's)
        with pytest.raises(ValueError, match="raise epsilon or keep clamp=True"):
            ldp_noise(x, epsilon=1e-3, lower=0.0, upper=limit / 100, clamp=False, seed=1)
        y = ldp_noise(x, epsilon=1e-3, lower=0.0, upper=limit / 100, seed=1)  # clamped
        assert bool(torch.isfinite(y).all())


def test_huge_copies_with_no_inputs_is_a_clear_error():
    """N = 0 made the output-size check pass; torch then failed to build the shape."""
    for copies in (2**62, 10**30):
        with pytest.raises(ValueError, match="too many outputs for one call"):
            ldp_noise(torch.rand(0, 3), epsilon=1.0, lower=0.0, upper=1.0, copies=copies)


def test_record_discrete_laplace_without_features_and_half_bounds():
    y = ldp_noise(
        torch.rand(2, 0),
        epsilon=1.0,
        lower=0.0,
        upper=1.0,
        mechanism="discrete_laplace",
        unit="record",
        seed=1,
    )  # D = 0 divided by zero in the grid sensitivity
    assert y.shape == (2, 1, 0)
    y = ldp_noise(
        torch.rand(2, 3),
        epsilon=1.0,
        lower=torch.zeros(3, dtype=torch.bfloat16),  # numpy has no bfloat16
        upper=torch.ones(3, dtype=torch.float16),
        seed=1,
    )
    assert y.shape == (2, 1, 3)


def test_calibrate_noise_validates_its_bounds():
    from noiseforge.ops import calibrate_noise

    cal = calibrate_noise(mechanism="laplace", epsilon=1.0, delta=None, lower=[0, 0], upper=[1, 2])
    assert cal.scale.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="one value per feature each; got 2 and 3"):
        calibrate_noise(mechanism="laplace", epsilon=1.0, delta=None, lower=[0, 0], upper=[1, 2, 3])
    with pytest.raises(TypeError, match="lower must be a number or a numeric array"):
        calibrate_noise(mechanism="laplace", epsilon=1.0, delta=None, lower=["a"], upper=[1])


def test_a_plan_run_again_without_keys_forgets_them():
    from noiseforge.ops.ldp_noise import run_plan

    x = torch.rand(3, 4)
    plan = plan_ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0)
    run_plan(plan, keys=torch.arange(3, dtype=torch.int64))
    again = run_plan(plan, seed=5, offset=0)
    assert torch.equal(again, ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0, seed=5, offset=0))


def test_the_keyword_defaults_read_as_before():
    """The noise keywords' defaults are told apart from the same values given (they may not
    be given beside a NoiseSpec), yet the signature shows the defaults users know."""
    import inspect

    params = inspect.signature(ldp_noise).parameters
    shown = {k: repr(params[k].default) for k in ("mechanism", "unit", "clamp", "copies", "delta")}
    assert shown == {
        "mechanism": "'laplace'",
        "unit": "'feature'",
        "clamp": "True",
        "copies": "1",
        "delta": "None",
    }
    assert params["mechanism"].default == "laplace" and params["unit"].default == "feature"
    assert params["clamp"].default == True  # noqa: E712 (the placeholder compares by value)
    assert list(params)[:2] == ["x", "noise"]


# ------------------------------------------------------- four elements per counter


def _triton_words(seed: int, counters: torch.Tensor) -> torch.Tensor:
    """(len(counters), 4) words from Triton's own tl.randint4x: the oracle."""
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def draw(out_ptr, counters_ptr, seed, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        c = tl.load(counters_ptr + i)
        a, b, cc, d = tl.randint4x(seed, c)
        tl.store(out_ptr + 4 * i, a.to(tl.int32, bitcast=True))
        tl.store(out_ptr + 4 * i + 1, b.to(tl.int32, bitcast=True))
        tl.store(out_ptr + 4 * i + 2, cc.to(tl.int32, bitcast=True))
        tl.store(out_ptr + 4 * i + 3, d.to(tl.int32, bitcast=True))

    block = triton.next_power_of_2(max(len(counters), 1))
    padded = torch.zeros(block, dtype=torch.int64)
    padded[: len(counters)] = counters
    raw = torch.empty((block, 4), dtype=torch.int32)
    draw[(1,)](raw, padded, seed, BLOCK=block)
    return (raw.long() & 0xFFFFFFFF)[: len(counters)]


def _unit_from_layout(mechanism, n, copies, d, seed, offset, keys=None):
    """The unit noise of every (n, k, j) element built from the documented layout and
    Triton's words: element l = k * D + j of input n is word l % 4 of counter
    base(n) + l // 4, base(n) = offset + n * ceil(K * D / 4) (or offset, stream keys[n])."""
    from noiseforge.reference.ldp_noise import gaussian_unit, laplace_unit

    per = -(-copies * d // 4)
    units = []
    for i in range(n):
        local = torch.arange(per, dtype=torch.int64) + offset
        if keys is None:
            words = _triton_words(seed, local + i * per)
        else:
            words = _triton_words(int(keys[i]), local)
        w = words.reshape(-1)[: copies * d]  # element l: row l // 4, word l % 4
        unit = laplace_unit(w) if mechanism == "laplace" else gaussian_unit(w)
        units.append(unit.reshape(copies, d))
    return torch.stack(units)


@pytest.mark.parametrize(("backend", "device"), backend_devices("ldp_noise"))
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
@pytest.mark.parametrize("per_input_keys", [False, True], ids=["stream", "keys"])
def test_four_elements_per_counter_follow_triton_randint4x(
    backend, device, mechanism, per_input_keys
):
    require_device(device)
    require_backend("ldp_noise", backend, torch.device(device))
    n, copies, d = 3, 3, 5  # 15 elements per input: 4 counters, the last word unused
    x = torch.rand((n, d), generator=torch.Generator().manual_seed(5))
    seed, offset = (1 << 33) + 7, (1 << 32) - 5  # the counters cross 2^32
    keys = torch.tensor([3, (1 << 62) + 1, -5], dtype=torch.int64) if per_input_keys else None
    kw = dict(epsilon=1.0, lower=-1e4, upper=1e4, mechanism=mechanism, copies=copies)
    if mechanism == "gaussian":
        kw["delta"] = 1e-5
    scale = plan_ldp_noise(x, **kw).scale
    call = dict(keys=keys, offset=offset) if per_input_keys else dict(seed=seed, offset=offset)
    got = ldp_noise(x.to(device), clamp=False, backend=backend, **call, **kw).cpu()
    unit = _unit_from_layout(mechanism, n, copies, d, seed, offset, keys)
    want = x.unsqueeze(1) + unit * scale  # the reference's float32 ops: xc = x here
    assert torch.equal(got, want)


def test_laplace_words_of_counter_zero_are_the_known_answer():
    # Random123's known answer for key 0, counter 0: the four words of the first
    # four elements of input 0, in order.
    from noiseforge.reference.ldp_noise import laplace_unit

    kat = torch.tensor([0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8], dtype=torch.int64)
    x = torch.zeros(1, 4)
    kw = dict(epsilon=1.0, lower=-1e4, upper=1e4, clamp=False, seed=0, offset=0)
    scale = plan_ldp_noise(x, epsilon=1.0, lower=-1e4, upper=1e4).scale
    for backend in ("torch", "cpu"):
        got = ldp_noise(x, backend=backend, **kw)[0, 0]
        assert torch.equal(got, laplace_unit(kat) * scale)
    # bit 0 is the sign, the top 23 bits the magnitude: words 0 and 1 are odd, 2 and 3 even
    assert (got < 0).tolist() == [True, True, False, False]


@pytest.mark.parametrize(("backend", "device"), backend_devices("ldp_noise"))
@pytest.mark.parametrize(
    ("epsilon", "levels", "unit"),
    [
        (2.0, 256, "feature"),  # the benchmark's case
        (8.0, 2, "feature"),  # one threshold
        (40.0, 16, "feature"),  # steep: most draws land on magnitude 0
        (0.05, 4097, "feature"),  # the most levels, a flat table
        (3.0, 64, "record"),  # the record's grid: many features share the budget
    ],
)
def test_discrete_laplace_large_calls_match_the_reference(backend, device, epsilon, levels, unit):
    """Large calls take the C++ backend's bucketed magnitude search (from 2^16
    elements): every magnitude must still be the reference's exact count."""
    require_device(device)
    require_backend("ldp_noise", backend, torch.device(device))
    x = torch.rand((37, 601), generator=torch.Generator().manual_seed(levels)).to(device)
    kw = dict(
        epsilon=epsilon,
        lower=0.0,
        upper=1.0,
        mechanism="discrete_laplace",
        levels=levels,
        unit=unit,
    )
    kw.update(copies=3, seed=levels, offset=11)  # 66,711 elements
    got = ldp_noise(x, backend=backend, **kw)
    want = ldp_noise(x.cpu(), backend="torch", **kw)
    assert_close_report(got.cpu(), want, 0.0, 0.0)
    # and the noise is not all zero: the magnitudes span the table
    assert (got.cpu() != ((x.cpu() * (levels - 1)).round() / (levels - 1)).unsqueeze(1)).any()
