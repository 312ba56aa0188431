"""The fused batched LDP noise op: clip, add calibrated noise, K copies, clamp."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from noiseforge import _native
from noiseforge._common.validation import check_int
from noiseforge.ops import _backends as B
from noiseforge.ops import registry
from noiseforge.ops.calibration import (  # noqa: F401 (names this module has always offered)
    _F32_MAX,
    MAX_LEVELS,
    REALIZED_SLACK,
    UNITS,
    NoiseCalibration,
    _bounds_vector,
    _check_grid,
    _check_number,
    _feature_vector,
    _round_up_f32,
    analytic_gaussian_sigma,
    calibrate_noise,
    geometric_alpha,
    geometric_table,
    realized_epsilon,
)
from noiseforge.ops.noise_spec import (
    _DEFAULT_CLAMP,
    _DEFAULT_MECHANISM,
    _DEFAULT_UNIT,
    Bound,
    Mechanism,
    NoiseSpec,
    resolve_noise,
)
from noiseforge.random import (
    MAX_COUNTER,
    PhiloxGenerator,
    check_seed,
    default_generator,
    seeded_generator,
)
from noiseforge.reference.ldp_noise import counters_per_input, ldp_noise_reference

OP = "ldp_noise"
MECHANISMS = {"laplace": 0, "gaussian": 1, "discrete_laplace": 2}
_DTYPE_CODES = B.DTYPE_CODES


@dataclass
class LdpNoisePlan:
    """A validated :func:`ldp_noise` call; every backend's ``run(plan)`` takes one.

    :func:`plan_ldp_noise` fills in the call; :func:`run_plan` then adds where the
    noise goes and which random words it uses (``out``, ``seed``, ``offset``,
    ``keys``) in a copy of the plan, so that a plan can be run again."""

    x: torch.Tensor  # (N, D), any strides
    n: int
    d: int
    feature_shape: tuple[int, ...]
    copies: int
    mechanism: str
    clamp: bool
    lower: torch.Tensor  # (D,) float32 on x.device
    upper: torch.Tensor
    scale: torch.Tensor
    table: torch.Tensor | None  # (levels-1,) int64 view of uint64 thresholds
    out_dtype: torch.dtype
    calibration: NoiseCalibration
    keys: torch.Tensor | None = None  # (N,) int64 per-input Philox keys (uint64 bits), or None
    source: torch.Tensor | None = None  # the caller's x (x above may be a reshaped copy)
    # the launch, set by run_plan in a copy of the plan: a plan from plan_ldp_noise has
    # none, and no backend runs it (a default key would be a public, repeated stream)
    out: torch.Tensor | None = None  # (N, copies, D) view of the output
    seed: int | None = None  # the Philox key of the call (0 with per-input keys)
    offset: int | None = None  # the first Philox counter
    noise: NoiseSpec | None = None  # the call's noise (calibration above: its values for x)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def numel(self) -> int:
        return self.n * self.copies * self.d

    @property
    def counters_per_input(self) -> int:
        """Philox counters of one input (``ceil(copies * d / E)``, ``E`` elements per
        counter: 4 for laplace and gaussian, 1 for discrete_laplace)."""
        return counters_per_input(self.mechanism, self.copies, self.d)

    @property
    def counters(self) -> int:
        """Philox counters the call uses (without keys: from its first counter on)."""
        return self.n * self.counters_per_input

    @property
    def table_len(self) -> int:
        return 0 if self.table is None else self.table.numel()

    @property
    def table_bits(self) -> int:
        return int(self.table_len).bit_length()


_Plan = LdpNoisePlan  # the name before plans were public


# --------------------------------------------------------------------------- validation


def _check_x(x: torch.Tensor) -> None:
    if x.dtype not in _DTYPE_CODES:
        raise TypeError(
            f"x has dtype {x.dtype}; ldp_noise takes float32, float16, bfloat16 or uint8 "
            "(convert with x.float())"
        )
    if x.dim() < 2:
        raise ValueError(
            f"x must be (N, ...) with a batch dimension, got shape {tuple(x.shape)}; "
            "reshape a single input with x.unsqueeze(0)"
        )
    first = B.first_nonfinite(x)
    if first >= 0:
        raise ValueError(
            f"x contains NaN or inf (first at flat index {first}); clean or impute the data "
            "before adding noise: the clipping that bounds sensitivity is undefined for them"
        )


def _output_dtype(
    x: torch.Tensor, mechanism: str, lower: np.ndarray, upper: np.ndarray, levels: int | None
) -> torch.dtype:
    if x.dtype != torch.uint8:
        return x.dtype
    if mechanism != "discrete_laplace":
        return torch.float32
    integral = (
        np.all(lower == np.round(lower))
        and np.all(lower >= 0)
        and np.all(upper <= 255)
        and np.all(upper - lower == levels - 1)
    )
    return torch.uint8 if integral else torch.float32


def plan_ldp_noise(
    x: torch.Tensor | np.ndarray,
    noise: NoiseSpec | None = None,
    *,
    epsilon: float | None = None,
    lower: Bound | None = None,
    upper: Bound | None = None,
    mechanism: str | Mechanism = _DEFAULT_MECHANISM,
    delta: float | None = None,
    copies: int = 1,
    unit: str = _DEFAULT_UNIT,
    levels: int | None = None,
    clamp: bool = _DEFAULT_CLAMP,
) -> LdpNoisePlan:
    """Validate the arguments of :func:`ldp_noise` and calibrate, without drawing noise.

    The noise is ``noise`` (a :class:`~noiseforge.ops.noise_spec.NoiseSpec`) or the
    keyword form, as for :func:`ldp_noise`. The result is what the backend
    registry's ``supports`` checks receive, so
    ``why_not("ldp_noise", backend, plan_ldp_noise(x, spec))`` tells whether a
    backend can run a call. Raises what :func:`ldp_noise` raises for bad input.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"x is on a {x.device.type} device; ldp_noise runs on CPU and CUDA tensors"
        )
    _check_x(x)
    copies = check_int("copies", copies, 1)
    noise = resolve_noise(
        noise,
        "ldp_noise",
        epsilon=epsilon,
        lower=lower,
        upper=upper,
        mechanism=mechanism,
        delta=delta,
        unit=unit,
        levels=levels,
        clamp=clamp,
    )
    mech = noise.mechanism
    mechanism, clamp = mech.name, noise.clamp
    n = x.shape[0]
    feature_shape = tuple(x.shape[1:])
    d = math.prod(feature_shape)
    # every output counter, and every stride of the (N, K, ...) output, must fit in int64
    if max(n, 1) * copies * max(d, 1) >= MAX_COUNTER:
        raise ValueError(
            f"{n} inputs x {copies} copies x {d} features is too many outputs for one call; "
            "split x or lower copies"
        )
    lo = _feature_vector("lower", noise.lower, feature_shape, d)
    hi = _feature_vector("upper", noise.upper, feature_shape, d)
    if mechanism == "discrete_laplace":  # (the spec refuses it unclamped)
        if mech.levels is None and x.dtype == torch.uint8 and d:
            widths = np.unique(hi.astype(np.float64) - lo.astype(np.float64))
            if widths.size != 1 or widths[0] != np.round(widths[0]):
                raise ValueError(
                    "uint8 input with per-feature domains of different integer widths: "
                    "give levels= explicitly"
                )
            if widths[0] + 1 > MAX_LEVELS:
                raise ValueError(
                    f"uint8 domain [{lo[0]:g}, {hi[0]:g}] has {widths[0] + 1:.6g} grid points, "
                    f"more than discrete_laplace supports ({MAX_LEVELS}); give levels= explicitly"
                )
            mech = replace(mech, levels=int(widths[0]) + 1)  # this call's grid
    cal = mech.calibrate(lo, hi, unit=noise.unit, copies=copies)
    table = None
    if mechanism == "discrete_laplace":
        assert cal.alpha is not None and cal.levels is not None
        table = torch.from_numpy(geometric_table(cal.alpha, cal.levels).view(np.int64).copy())
        table = table.to(x.device)
    out_dtype = _output_dtype(x, mechanism, lo, hi, cal.levels)
    _check_output_range(out_dtype, lo, hi, cal.scale, noisy_tail=not clamp)
    dev = x.device
    return LdpNoisePlan(
        x=x.reshape(n, d),
        n=n,
        d=d,
        feature_shape=feature_shape,
        copies=copies,
        mechanism=mechanism,
        clamp=clamp,
        lower=torch.from_numpy(lo).to(dev),
        upper=torch.from_numpy(hi).to(dev),
        scale=torch.from_numpy(cal.scale).to(dev),
        table=table,
        out_dtype=out_dtype,
        calibration=cal,
        source=x,
        noise=noise,
    )


def _check_output_range(
    out_dtype: torch.dtype,
    lo: np.ndarray,
    hi: np.ndarray,
    scale: np.ndarray,
    *,
    noisy_tail: bool,
) -> None:
    """float16/bfloat16 outputs: every value the op can write must be finite in that
    dtype (float32 is checked by :func:`calibrate_noise`). Clamped outputs stay within
    the bounds; unclamped ones reach about 17 scales beyond them (20 are allowed for)."""
    if out_dtype not in (torch.float16, torch.bfloat16) or lo.size == 0:
        return
    limit = float(torch.finfo(out_dtype).max)
    reach = float(np.max(np.abs(np.concatenate([lo, hi]).astype(np.float64))))
    if noisy_tail:
        reach += 20.0 * float(np.max(scale))
    if not reach <= limit:
        raise ValueError(
            f"outputs of this call reach {reach:.4g}, beyond the largest {out_dtype} "
            f"({limit:.4g}), and would be inf; give x as float32 (x.float()), narrow the domain"
            + (", raise epsilon or keep clamp=True" if noisy_tail else "")
        )


# --------------------------------------------------------------------------- backends


def _run_torch(p: LdpNoisePlan) -> torch.Tensor:
    p.out.copy_(
        ldp_noise_reference(
            p.x,
            mechanism=p.mechanism,
            lower=p.lower,
            upper=p.upper,
            scale=p.scale,
            copies=p.copies,
            clamp=p.clamp,
            seed=p.seed,
            offset=p.offset,
            out_dtype=p.out_dtype,
            table=p.table,
            keys=p.keys,
        )
    )
    return p.out


def _native_args(p: LdpNoisePlan) -> tuple[Any, torch.Tensor]:
    """The native kernels' argument struct (``_C.LdpNoiseArgs``) for one call.

    Returns the struct and the contiguous input, which must outlive the call
    (the struct holds its address).
    """
    x = p.x.contiguous()
    table = p.table if p.table is not None else p.scale  # any valid pointer when unused
    a = _native.native().LdpNoiseArgs()
    a.x = x.data_ptr()
    a.out = p.out.data_ptr()
    a.n, a.d, a.copies = p.n, p.d, p.copies
    a.in_dtype = _DTYPE_CODES[x.dtype]
    a.out_dtype = _DTYPE_CODES[p.out_dtype]
    a.lower = p.lower.data_ptr()
    a.upper = p.upper.data_ptr()
    a.scale = p.scale.data_ptr()
    a.table = table.data_ptr()
    a.table_len, a.table_bits = p.table_len, p.table_bits
    a.mechanism = MECHANISMS[p.mechanism]
    a.clamp = p.clamp
    a.seed, a.offset = p.seed, p.offset
    a.row_keys = 0 if p.keys is None else p.keys.data_ptr()  # 0: one stream `seed` for the call
    return a, x


def _run_cpu(p: LdpNoisePlan) -> torch.Tensor:
    args, _keep = _native_args(p)
    _native.native().ldp_noise_cpu(args, B.cpu_threads())
    return p.out


def _run_cuda(p: LdpNoisePlan) -> torch.Tensor:
    args, _keep = _native_args(p)
    with B.device_guard(p.device):
        _native.native().ldp_noise_cuda(args, B.cuda_stream(p.device))
    return p.out


def _run_triton(p: LdpNoisePlan) -> torch.Tensor:
    from noiseforge.kernels.ldp_noise import ldp_noise_kernel

    x = p.x.contiguous()
    table = p.table if p.table is not None else torch.zeros(1, dtype=torch.int64, device=x.device)
    keys = p.keys if p.keys is not None else table  # any valid pointer when unused
    block = 1024
    grid = (B.cdiv(_triton_lanes(p), block),)
    bf16 = p.out_dtype == torch.bfloat16
    with B.device_guard(p.device):
        _launch_triton(
            ldp_noise_kernel,
            grid,
            x,
            p.out.view(torch.int16) if bf16 else p.out,
            p,
            table,
            keys,
            p.seed,
            p.offset,
            bf16,
            block,
        )
    return p.out


# "1" forces the Triton kernel's 64-bit index path (tests cover both paths)
_INDEX64_ENV = "NOISEFORGE_LDP_INDEX64"


def _triton_lanes(p: LdpNoisePlan) -> int:
    """Lanes of the Triton kernel: a counter each for laplace and gaussian (four
    elements), an element each for discrete_laplace."""
    return p.numel if p.mechanism == "discrete_laplace" else p.counters


def _launch_triton(
    kernel, grid, x, out, p: LdpNoisePlan, table, keys, seed, offset, bf16, block
) -> None:
    kernel[grid](
        x,
        out,
        p.lower,
        p.upper,
        p.scale,
        table,
        keys,
        _triton_lanes(p),
        p.d,
        p.copies,
        p.counters_per_input,
        p.table_len,
        seed,
        offset,
        MECHANISM=MECHANISMS[p.mechanism],
        CLAMP=p.clamp,
        TABLE_BITS=p.table_bits,
        ROW_KEYS=p.keys is not None,
        OUT_BF16=bf16,
        BLOCK=block,
        INDEX32=p.numel + 4 * block < 2**31 and os.environ.get(_INDEX64_ENV) != "1",
        **B.triton_launch_options(),
    )


_EXACT = {torch.float32: (0.0, 0.0), torch.float16: (0.0, 0.0), torch.bfloat16: (0.0, 0.0)}
# Compiled GPU code is meant to be exact too (no FMA contraction, IEEE div/sqrt); the
# stated tolerance leaves room for a device conversion we have not yet measured.
_GPU = {torch.float32: (1e-6, 1e-6), torch.float16: (1e-3, 1e-3), torch.bfloat16: (1e-2, 1e-2)}


def _example(device: torch.device) -> LdpNoisePlan:
    x = torch.linspace(0.0, 1.0, 6, device=device).reshape(2, 3)
    p = plan_ldp_noise(x, epsilon=1.0, lower=0.0, upper=1.0)
    out = torch.empty((p.n, p.copies, p.d), dtype=p.out_dtype, device=device)
    return replace(p, out=out, seed=7, offset=0)


def _launched(run):
    """``run`` refusing a plan without a launch (see :class:`LdpNoisePlan`)."""

    @functools.wraps(run)
    def checked(p: LdpNoisePlan) -> torch.Tensor:
        if p.out is None or p.seed is None or p.offset is None:
            raise ValueError(
                "this ldp_noise plan has no launch (out, seed, offset): run it with "
                "noiseforge.ops.ldp_noise.run_plan(plan, ...), which draws fresh counters "
                "from a secret (or your seeded) stream, or call ldp_noise()"
            )
        return run(p)

    return checked


LDP_NOISE: registry.Op[LdpNoisePlan, torch.Tensor] = registry.register_op(
    registry.Op(OP, LdpNoisePlan, plan_ldp_noise, _example, "fused clamp + calibrated LDP noise")
)
B.add_backends(
    LDP_NOISE,
    cuda=_launched(_run_cuda),
    triton=_launched(_run_triton),
    cpu=_launched(_run_cpu),
    torch_ref=_launched(_run_torch),
    tolerance=_EXACT,
    gpu_tolerance=_GPU,
)


# --------------------------------------------------------------------------- public op


def _check_out(
    out: torch.Tensor, shape: tuple[int, ...], p: LdpNoisePlan, keys: torch.Tensor | None
) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    problems = []
    if tuple(out.shape) != shape:
        problems.append(f"shape {tuple(out.shape)} (expected {shape})")
    if out.dtype != p.out_dtype:
        problems.append(f"dtype {out.dtype} (expected {p.out_dtype})")
    if out.device != p.device:
        problems.append(f"device {out.device} (expected {p.device})")
    if not out.is_contiguous():
        problems.append("non-contiguous storage (expected contiguous)")
    if problems:
        raise ValueError("out has " + ", ".join(problems))
    for name, t in (("x", p.source), ("x", p.x), ("keys", keys)):
        if t is not None and _overlap(out, t):
            (o0, o1), (t0, t1) = _span(out), _span(t)
            raise ValueError(
                f"out overlaps {name} in memory: out's bytes [{o0:#x}, {o1:#x}) meet the span "
                f"of {name}, [{t0:#x}, {t1:#x}) with its strides and storage offset; the op "
                "never overwrites its input: pass a separate buffer"
            )


def _span(t: torch.Tensor) -> tuple[int, int]:
    """[first, end) addresses of the bytes t's elements occupy: from its data pointer
    (storage offset included) to its last element (torch strides are never negative)."""
    if t.numel() == 0:
        return 0, 0
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory spans of a and b meet (by address: views of one storage, and
    tensors over the same memory through different storages, e.g. two numpy views).
    A strided tensor's span includes its gaps, so this refuses a few disjoint layouts."""
    if a.device != b.device:
        return False
    (a0, a1), (b0, b1) = _span(a), _span(b)
    return a0 < b1 and b0 < a1


def ldp_noise(
    x: torch.Tensor | np.ndarray,
    noise: NoiseSpec | None = None,
    *,
    epsilon: float | None = None,
    lower: Bound | None = None,
    upper: Bound | None = None,
    mechanism: str | Mechanism = _DEFAULT_MECHANISM,
    delta: float | None = None,
    copies: int = 1,
    unit: str = _DEFAULT_UNIT,
    levels: int | None = None,
    clamp: bool = _DEFAULT_CLAMP,
    seed: int | None = None,
    generator: PhiloxGenerator | None = None,
    offset: int | None = None,
    keys: torch.Tensor | np.ndarray | None = None,
    out: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor | np.ndarray:
    r"""Clip each input to its domain and release ``copies`` noisy copies, in one pass.

    For input ``n``, copy ``k`` and feature ``j``:

    .. math::
        y_{n,k,j} = \mathrm{clip}\big(\mathrm{clip}(x_{n,j}, l_j, u_j) + s_j\,\xi_{n,k,j},\ l_j, u_j\big)

    with ``xi`` standard Laplace or standard normal from one 32-bit Philox4x32-10
    word: element ``l = k * D + j`` of input ``n`` takes word ``l % 4`` of counter
    ``offset + n * ceil(K * D / 4) + l // 4`` (with per-input ``keys``: of counter
    ``offset + l // 4`` of the stream ``keys[n]``), so a counter's four words never
    serve two inputs and a call uses ``N * ceil(K * D / 4)`` counters
    (discrete_laplace, which needs 65 random bits per element: counter
    ``offset + n * K * D + l``, or ``offset + l`` with keys). Up to noiseforge
    0.1 every element had a counter of its own: a seeded laplace or gaussian
    stream replayed from then gives different noise now. The outer clip is
    ``clamp`` (post-processing, free of privacy cost). ``discrete_laplace``
    quantises ``clip(x)`` to ``levels`` grid points and adds two-sided geometric
    integer noise, clamped to the grid.

    Parameters
    ----------
    x:
        (N, ...) float32, float16, bfloat16 or uint8 tensor (or numpy array), any
        strides, on CPU or CUDA. Feature shape ``x.shape[1:]`` has D elements.
    noise:
        The noise as one value, a :class:`~noiseforge.ops.noise_spec.NoiseSpec`
        (mechanism, domain, unit, clamp), e.g.
        ``NoiseSpec(Laplace(1.0), lower=0.0, upper=1.0)``. Or leave it out and give
        the keyword form below (``epsilon``, ``lower`` and ``upper`` required),
        which builds the same spec; giving both is a TypeError.
    epsilon:
        Privacy parameter, > 0: per feature (``unit="feature"``) or per record.
    lower, upper:
        The domain, scalars or arrays broadcastable to the feature shape, with
        ``lower < upper``. Clipping to it is what bounds the sensitivity.
    mechanism:
        ``"laplace"`` (default; scale ``(u - l) / eps``), ``"gaussian"`` (analytic
        Gaussian calibration for ``(eps, delta)``), or ``"discrete_laplace"``
        (hardened); or a mechanism value (``Laplace``, ``Gaussian``,
        ``DiscreteLaplace``) holding epsilon, delta and levels itself.
    delta:
        Gaussian only, in (0, 1).
    unit:
        ``"feature"`` (default): each feature is an eps-LDP release; a record of D features is
        then ``D * eps``-LDP (basic composition). ``"record"``: the record is one
        eps-LDP release (noise calibrated to the L1 / L2 sensitivity of all features).
    levels:
        discrete_laplace only: grid points per feature (default 256, or
        ``upper - lower + 1`` for uint8 input).
    clamp:
        Clamp the noisy value back to the domain (default True; always on for
        discrete_laplace).
    copies:
        K >= 1 independent noisy copies of every input (a choice of the call, not
        part of the spec: K copies cost K times one).
    seed, generator, offset:
        Randomness. By default a **secret** OS-seeded stream that advances with
        every call (no stream is reused). ``seed=int`` uses a reproducible stream
        that also advances per call: **not private**, for experiments and tests.
        ``offset`` (with ``seed``) replays counters exactly and does not advance;
        replaying noise on the same data voids the privacy guarantee.
    keys:
        Optional (N,) int64 tensor or int64/uint64 array: input ``n`` draws from
        its own stream, Philox key ``keys[n]`` (the 64 bits), from counter
        ``offset`` on (``offset`` defaults to 0; the layout above). The noise of an input
        then depends on its key only, not on the batch it is in or its position
        -- what :func:`noiseforge.ldp.release` uses to derive a record's noise
        from the release and the record id. Excludes ``seed`` and ``generator``;
        the keys are as private as the caller keeps them.
    out:
        Optional contiguous output buffer of the result's shape and dtype.
    backend:
        ``"auto"`` (default, or ``$NOISEFORGE_BACKEND``), ``"torch"``, ``"cpu"``,
        ``"cuda"`` or ``"triton"``.

    Returns
    -------
    (N, K, ...) tensor (numpy array for numpy input). Its dtype is x's for float
    inputs; float32 for uint8 input, except discrete_laplace on an integer
    domain with unit steps, which stays uint8.

    Guarantees
    ----------
    ``laplace``: eps-LDP per feature (or record) for the ideal real-valued
    mechanism; float32 sampling is open to the floating-point attack of Mironov
    (CCS 2012). ``gaussian``: (eps, delta)-LDP likewise. ``discrete_laplace``:
    every output is a grid value and the sampler uses integer comparisons only,
    so the attack does not apply; :func:`calibrate_noise` reports the exact
    realized epsilon of the sampled distribution (within 1e-9 of eps for
    moderate eps). The guarantee covers one release of each record: releasing
    the same record again composes (see the LDPKiT privacy ledger).

    Raises
    ------
    TypeError, ValueError
        Bad dtype or shape, NaN/inf in x, lower >= upper, eps <= 0, delta outside
        (0, 1), unknown mechanism, a mismatched ``out``, ``noise`` given beside noise
        keywords (or neither); the message says what to do.
    BackendUnavailableError
        An explicit backend cannot run this input (the message lists why).
    """
    as_numpy = isinstance(x, np.ndarray)
    if as_numpy:
        x = torch.from_numpy(x)
    p = plan_ldp_noise(
        x,
        noise,
        mechanism=mechanism,
        epsilon=epsilon,
        delta=delta,
        lower=lower,
        upper=upper,
        copies=copies,
        unit=unit,
        levels=levels,
        clamp=clamp,
    )
    if keys is not None and (seed is not None or generator is not None):
        raise ValueError("give keys= (one stream per input) or seed=/generator=, not both")
    out = run_plan(
        p, backend=backend, out=out, keys=keys, seed=seed, generator=generator, offset=offset
    )
    return out.numpy() if as_numpy else out


def run_plan(
    p: LdpNoisePlan,
    *,
    backend: str | None = None,
    out: torch.Tensor | None = None,
    keys: torch.Tensor | np.ndarray | None = None,
    seed: int | None = None,
    generator: PhiloxGenerator | None = None,
    offset: int | None = None,
) -> torch.Tensor:
    """Draw the noise of an already validated call (:func:`plan_ldp_noise`): what
    :func:`ldp_noise` does after validation, for callers that planned themselves
    (``noiseforge.ldp.release`` plans once, before it charges the ledger)."""
    shape = (p.n, p.copies, *p.feature_shape)
    row_keys = None if keys is None else _check_keys(keys, p.n, p.device)
    if out is None:
        try:
            out = torch.empty(shape, dtype=p.out_dtype, device=p.device)
        except (RuntimeError, MemoryError):  # the allocator's out-of-memory errors
            size = math.prod(shape) * torch.empty(0, dtype=p.out_dtype).element_size()
            raise ValueError(
                f"the output {shape} ({size / 2**30:.3g} GiB) cannot be allocated on "
                f"{p.device}; split x or lower copies"
            ) from None
    else:
        _check_out(out, shape, p, row_keys)
    p = replace(p, keys=row_keys)  # a copy: the caller's plan keeps no keys
    rec = LDP_NOISE.select(backend, p)
    if keys is not None:
        key, start = 0, _check_offset(0 if offset is None else offset, p.counters_per_input)
    else:
        key, start = _draw_counters(p.counters, seed, generator, offset)
    if p.numel:
        rec.run(replace(p, out=out.view(p.n, p.copies, p.d), seed=key, offset=start))
    return out


def _draw_counters(
    count: int, seed: int | None, generator: PhiloxGenerator | None, offset: int | None
) -> tuple[int, int]:
    if generator is not None and not isinstance(generator, PhiloxGenerator):
        raise TypeError(
            f"generator must be a noiseforge.PhiloxGenerator, got {type(generator).__name__} "
            "(torch generators cannot give the counter-based streams the backends share)"
        )
    if generator is not None and (seed is not None or offset is not None):
        raise ValueError("give either generator= or seed= (with an optional offset=), not both")
    if offset is not None:
        if seed is None:
            raise ValueError("offset= replays a seeded stream: give seed= as well")
        check_seed(seed)
        return seed, _check_offset(offset, count)
    if generator is None:
        generator = default_generator() if seed is None else seeded_generator(seed)
    return generator.reserve(count)


def _check_offset(offset: Any, count: int) -> int:
    offset = check_int("offset", offset, 0)
    if offset + count > MAX_COUNTER:
        raise ValueError("offset + the call's Philox counters exceed the 2**63 counter space")
    return offset


def _check_keys(keys: Any, n: int, device: torch.device) -> torch.Tensor:
    """(N,) per-input Philox keys as a contiguous int64 tensor on ``device``."""
    if isinstance(keys, np.ndarray):
        if keys.dtype == np.uint64:
            keys = keys.view(np.int64)
        keys = torch.from_numpy(np.ascontiguousarray(keys))
    if not isinstance(keys, torch.Tensor):
        raise TypeError(f"keys must be a tensor or numpy array, got {type(keys).__name__}")
    if keys.dtype != torch.int64:
        raise TypeError(
            f"keys must be int64 (the bits of 64-bit Philox keys), got {keys.dtype}; "
            "convert with keys.to(torch.int64) or a uint64 array's .view(np.int64)"
        )
    if tuple(keys.shape) != (n,):
        raise ValueError(f"keys must have shape ({n},), one key per input; got {tuple(keys.shape)}")
    return keys.to(device).contiguous()


def ldp_noise_calibration(
    x: torch.Tensor | np.ndarray, noise: NoiseSpec | None = None, **kwargs: Any
) -> NoiseCalibration:
    """The :class:`NoiseCalibration` that :func:`ldp_noise` would use for these
    arguments (a NoiseSpec or the keyword form; same validation and defaults), without
    drawing noise."""
    return plan_ldp_noise(x, noise, **kwargs).calibration
