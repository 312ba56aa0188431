"""The fused batched LDP noise op: clip, add calibrated noise, K copies, clamp."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from noiseforge import _native
from noiseforge.ops import _backends as B
from noiseforge.ops import registry
from noiseforge.ops.calibration import (
    MAX_LEVELS,
    NoiseCalibration,
    analytic_gaussian_sigma,
    geometric_alpha,
    geometric_table,
    realized_epsilon,
)
from noiseforge.random import (
    MAX_COUNTER,
    PhiloxGenerator,
    check_seed,
    default_generator,
    seeded_generator,
)
from noiseforge.reference.ldp_noise import ldp_noise_reference

OP = "ldp_noise"
MECHANISMS = {"laplace": 0, "gaussian": 1, "discrete_laplace": 2}
UNITS = ("feature", "record")
_DTYPE_CODES = B.DTYPE_CODES

Bound = float | int | torch.Tensor | np.ndarray


#: how far the realized discrete-Laplace loss may exceed the epsilon asked for (the
#: 64-bit tables' rounding); beyond it the epsilon is refused as too small
REALIZED_SLACK = 0.01


@dataclass
class _Plan:
    """A validated call: everything a backend needs besides the random key."""

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

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def numel(self) -> int:
        return self.n * self.copies * self.d

    @property
    def table_len(self) -> int:
        return 0 if self.table is None else self.table.numel()

    @property
    def table_bits(self) -> int:
        return int(self.table_len).bit_length()


# --------------------------------------------------------------------------- validation


_F32_MAX = float(np.finfo(np.float32).max)


def _check_number(name: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float64
        raise ValueError(
            f"{name} must be a finite number > 0, got an integer of {int(value).bit_length()} "
            "bits (beyond float64)"
        ) from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _feature_vector(name: str, value: Bound, feature_shape: tuple[int, ...], d: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_floating_point() and t.dtype != torch.float64:
            t = t.float()  # numpy has no bfloat16; float16 -> float32 is exact
        arr = t.cpu().numpy()
    else:
        arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"{name} must be a number or a numeric array within float32's range, got dtype "
            f"{arr.dtype}"
        )
    try:
        arr = np.broadcast_to(arr, feature_shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {arr.shape}, which does not broadcast to the feature shape "
            f"{feature_shape} of x; give a scalar or an array of that shape"
        ) from None
    wide = np.asarray(arr, dtype=np.float64).reshape(d)
    bad = np.flatnonzero(~np.isfinite(wide))
    if bad.size:
        raise ValueError(f"{name} must be finite; feature {bad[0]} is {wide[bad[0]]}")
    bad = np.flatnonzero(np.abs(wide) > _F32_MAX)
    if bad.size:
        raise ValueError(
            f"{name} must lie within float32's range (+-{_F32_MAX:.4g}), the precision of the "
            f"op; feature {bad[0]} is {wide[bad[0]]:.4g}: rescale the data"
        )
    return wide.astype(np.float32)


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


def _bounds_vector(name: str, value: Any) -> np.ndarray:
    """(D,) float32 bounds for :func:`calibrate_noise` (any shape, flattened)."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    d = int(arr.size)
    return _feature_vector(name, arr.reshape(d) if arr.dtype.kind in "fiu" else arr, (d,), d)


def _check_grid(lower: np.ndarray, upper: np.ndarray, levels: int) -> None:
    """discrete_laplace computes ``(x - lower) / step`` and ``lower + q * step`` in float32
    (step = the grid step): the width must be finite there and the step a normal float32."""
    with np.errstate(over="ignore"):
        width32 = upper - lower  # float32, as the kernels compute it
    bad = np.flatnonzero(~np.isfinite(width32))
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"discrete_laplace: the domain [{lower[j]:.4g}, {upper[j]:.4g}] of feature {j} is "
            "wider than float32's range, in which the grid is computed; rescale the data"
        )
    step = (upper.astype(np.float64) - lower.astype(np.float64)) / (levels - 1)
    bad = np.flatnonzero(step.astype(np.float32) < np.finfo(np.float32).tiny)
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"discrete_laplace: the grid step (upper - lower) / (levels - 1) = {step[j]:.3g} "
            f"of feature {j} is below float32's normal range (~1.2e-38); widen the domain "
            "(rescale the data) or use fewer levels"
        )


def _round_up_f32(values: np.ndarray) -> np.ndarray:
    """float64 -> float32, rounding up, so that noise is never smaller than calibrated."""
    out = values.astype(np.float32)
    low = out.astype(np.float64) < values
    out[low] = np.nextafter(out[low], np.float32(np.inf))
    return out


def calibrate_noise(
    *,
    mechanism: str,
    epsilon: float,
    delta: float | None,
    lower: np.ndarray,
    upper: np.ndarray,
    unit: str = "feature",
    levels: int | None = None,
    copies: int = 1,
) -> NoiseCalibration:
    """Per-feature noise scales and the guarantee for float32 (D,) domain bounds.

    See :mod:`noiseforge.ops.calibration` for the formulas. ``copies`` (K) enters
    the guarantee only: every copy is a fresh release of the same record, so a
    record's K copies together cost K times the budget of one. Raises ValueError
    on an unknown mechanism or unit, a bad epsilon/delta/levels, lower >= upper,
    bounds beyond float32, a noise scale beyond float32, or (discrete_laplace) an
    epsilon that the 64-bit sampling tables cannot realise (too small: the noise
    is flatter than they resolve; too large: some outputs become unreachable), a
    domain wider than float32 or a grid step below float32's normal range.
    """
    lower = _bounds_vector("lower", lower)
    upper = _bounds_vector("upper", upper)
    if lower.shape != upper.shape:
        raise ValueError(
            f"lower and upper must have one value per feature each; got {lower.size} and "
            f"{upper.size} values"
        )
    if not isinstance(mechanism, str) or mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {sorted(MECHANISMS)}, got {mechanism!r}")
    if not isinstance(unit, str) or unit not in UNITS:
        raise ValueError(f"unit must be 'feature' or 'record', got {unit!r}")
    epsilon = _check_number("epsilon", epsilon)
    if mechanism == "gaussian":
        if delta is None:
            raise ValueError("the Gaussian mechanism needs delta in (0, 1), e.g. delta=1e-5")
        delta = _check_number("delta", delta)
        if not delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
    elif delta not in (None, 0, 0.0):
        raise ValueError(f"delta applies to mechanism='gaussian' only; {mechanism} is pure eps-LDP")
    bad = np.flatnonzero(~(lower < upper))
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"lower must be < upper for every feature; feature {j} has lower={lower[j]} "
            f">= upper={upper[j]}"
        )
    d = lower.size
    width = upper.astype(np.float64) - lower.astype(np.float64)
    feature = unit == "feature"
    extra: dict[str, Any] = {}
    delta_one = 0.0
    if mechanism == "laplace":
        with np.errstate(over="ignore"):  # an infinite scale is refused below
            scale = width / epsilon if feature else np.full(d, width.sum() / epsilon)
        eps_f = epsilon if feature else math.nan
        eps_r = epsilon * d if feature else epsilon
    elif mechanism == "gaussian":
        assert delta is not None
        unit_sigma = analytic_gaussian_sigma(epsilon, delta, 1.0)  # sigma scales with Delta
        if feature:
            scale = width * unit_sigma
            eps_f, eps_r, delta_one = epsilon, epsilon * d, min(1.0, delta * d)
        else:
            scale = np.full(d, math.sqrt(float(np.sum(width**2))) * unit_sigma)
            eps_f, eps_r, delta_one = math.nan, epsilon, delta
    else:  # discrete_laplace
        if levels is None:
            levels = 256
        if (
            isinstance(levels, bool)
            or not isinstance(levels, Integral)
            or not 2 <= levels <= MAX_LEVELS
        ):
            raise ValueError(f"levels must be an int in [2, {MAX_LEVELS}], got {levels!r}")
        levels = int(levels)
        _check_grid(lower, upper, levels)
        grid = (levels - 1) * (1 if feature else max(d, 1))  # D = 0: nothing is released
        alpha = geometric_alpha(epsilon, grid)
        too_small = (
            f"epsilon={epsilon} is too small for discrete_laplace with {levels} levels"
            f"{'' if feature else f' over {d} features'}: its noise (alpha = exp(-epsilon / "
            f"{grid}) = {alpha!r}) is flatter than the 64-bit sampling tables resolve, so some "
            "outputs would be unreachable; raise epsilon or use fewer levels"
        )
        # 2 alpha / (1 + alpha) = P(|Z| >= 1) rounding to 1 would overflow the uint64 table
        if not 2.0 * alpha / (1.0 + alpha) < 1.0:
            raise ValueError(too_small)
        per_feature = realized_epsilon(alpha, levels)
        if not math.isfinite(per_feature):
            if geometric_table(alpha, levels)[-1] != 0:  # no threshold reached 0: too flat
                raise ValueError(too_small)
            raise ValueError(
                f"epsilon={epsilon} is too large for discrete_laplace with {levels} levels: the "
                "64-bit sampling tables cannot reach every output; lower epsilon or the levels"
            )
        wanted = epsilon if feature else epsilon / max(d, 1)
        if per_feature > wanted * (1 + REALIZED_SLACK):
            raise ValueError(
                f"epsilon={epsilon} is too small for discrete_laplace with {levels} levels"
                f"{'' if feature else f' over {d} features'}: the 64-bit sampling tables' "
                f"rounding would make the privacy loss {per_feature:.3g} per feature, not the "
                f"{wanted:.3g} asked for; raise epsilon, use fewer levels, or use laplace"
            )
        scale = width / (levels - 1)  # the grid step (privacy does not depend on it)
        eps_f = per_feature if feature else math.nan
        eps_r = math.nextafter(per_feature * d, math.inf) if d > 1 else per_feature * d
        extra = {"levels": levels, "alpha": alpha}
    # Noise draws reach about 17 scales (Laplace) from the input; all of it must stay finite.
    if (
        d
        and not float(np.max(scale)) * 20 + float(np.max(np.abs(np.concatenate([lower, upper]))))
        < _F32_MAX
    ):
        raise ValueError(
            f"the noise scale {float(np.max(scale)):.3g} is too large for float32 (domain width "
            f"/ epsilon); rescale the data to a smaller domain or raise epsilon"
        )
    scale = np.asarray(scale, np.float64)
    # continuous scales round up (never less noise than calibrated); the grid step rounds to nearest
    scale32 = scale.astype(np.float32) if extra else _round_up_f32(scale)
    return NoiseCalibration(
        mechanism,
        unit,
        epsilon,
        delta or 0.0,
        d,
        scale32,
        eps_f,
        eps_r,
        delta_one,
        copies=copies,
        **extra,
    )


def plan_ldp_noise(
    x: torch.Tensor | np.ndarray,
    *,
    epsilon: float,
    lower: Bound,
    upper: Bound,
    mechanism: str = "laplace",
    delta: float | None = None,
    copies: int = 1,
    unit: str = "feature",
    levels: int | None = None,
    clamp: bool = True,
) -> _Plan:
    """Validate the arguments of :func:`ldp_noise` and calibrate, without drawing noise.

    The result is what the backend registry's ``supports`` checks receive, so
    ``why_not("ldp_noise", backend, plan_ldp_noise(x, ...))`` tells whether a
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
    if isinstance(copies, bool) or not isinstance(copies, Integral) or copies < 1:
        raise ValueError(f"copies must be an int >= 1, got {copies!r}")
    copies = int(copies)
    if not isinstance(clamp, bool | np.bool_):
        raise TypeError(f"clamp must be True or False, got {clamp!r}")
    clamp = bool(clamp)
    n = x.shape[0]
    feature_shape = tuple(x.shape[1:])
    d = math.prod(feature_shape)
    # every output counter, and every stride of the (N, K, ...) output, must fit in int64
    if max(n, 1) * copies * max(d, 1) >= MAX_COUNTER:
        raise ValueError(
            f"{n} inputs x {copies} copies x {d} features is too many outputs for one call; "
            "split x or lower copies"
        )
    lo = _feature_vector("lower", lower, feature_shape, d)
    hi = _feature_vector("upper", upper, feature_shape, d)
    if mechanism == "discrete_laplace":
        if not clamp:
            raise ValueError(
                "discrete_laplace always clamps to the grid (the truncated geometric "
                "mechanism); call it with clamp=True"
            )
        if levels is None and x.dtype == torch.uint8 and d:
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
            levels = int(widths[0]) + 1
    elif levels is not None:
        raise ValueError("levels applies to mechanism='discrete_laplace' only")
    cal = calibrate_noise(
        mechanism=mechanism,
        epsilon=epsilon,
        delta=delta,
        lower=lo,
        upper=hi,
        unit=unit,
        levels=levels,
        copies=copies,
    )
    table = None
    if mechanism == "discrete_laplace":
        assert cal.alpha is not None and cal.levels is not None
        table = torch.from_numpy(geometric_table(cal.alpha, cal.levels).view(np.int64).copy())
        table = table.to(x.device)
    out_dtype = _output_dtype(x, mechanism, lo, hi, cal.levels)
    _check_output_range(out_dtype, lo, hi, cal.scale, noisy_tail=not clamp)
    dev = x.device
    return _Plan(
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


def _run_torch(p: _Plan, out: torch.Tensor, seed: int, offset: int) -> None:
    out.copy_(
        ldp_noise_reference(
            p.x,
            mechanism=p.mechanism,
            lower=p.lower,
            upper=p.upper,
            scale=p.scale,
            copies=p.copies,
            clamp=p.clamp,
            seed=seed,
            offset=offset,
            out_dtype=p.out_dtype,
            table=p.table,
            keys=p.keys,
        )
    )


def _native_args(p: _Plan, out: torch.Tensor, seed: int, offset: int) -> tuple:
    x = p.x.contiguous()
    table = p.table if p.table is not None else p.scale  # any valid pointer when unused
    keys = 0 if p.keys is None else p.keys.data_ptr()  # 0: one stream `seed` for the call
    return (
        x.data_ptr(),
        out.data_ptr(),
        p.n,
        p.d,
        p.copies,
        _DTYPE_CODES[x.dtype],
        _DTYPE_CODES[p.out_dtype],
        p.lower.data_ptr(),
        p.upper.data_ptr(),
        p.scale.data_ptr(),
        table.data_ptr(),
        p.table_len,
        p.table_bits,
        MECHANISMS[p.mechanism],
        p.clamp,
        seed,
        offset,
        keys,
    ), x


def _run_cpu(p: _Plan, out: torch.Tensor, seed: int, offset: int) -> None:
    args, _keep = _native_args(p, out, seed, offset)
    _native.native().ldp_noise_cpu(*args, B.cpu_threads())


def _run_cuda(p: _Plan, out: torch.Tensor, seed: int, offset: int) -> None:
    args, _keep = _native_args(p, out, seed, offset)
    with B.device_guard(p.device):
        _native.native().ldp_noise_cuda(*args, B.cuda_stream(p.device))


def _run_triton(p: _Plan, out: torch.Tensor, seed: int, offset: int) -> None:
    from noiseforge.kernels.ldp_noise import ldp_noise_kernel

    x = p.x.contiguous()
    table = p.table if p.table is not None else torch.zeros(1, dtype=torch.int64, device=x.device)
    keys = p.keys if p.keys is not None else table  # any valid pointer when unused
    block = 1024
    grid = (B.cdiv(p.numel, block),)
    bf16 = p.out_dtype == torch.bfloat16
    with B.device_guard(p.device):
        _launch_triton(
            ldp_noise_kernel,
            grid,
            x,
            out.view(torch.int16) if bf16 else out,
            p,
            table,
            keys,
            seed,
            offset,
            bf16,
            block,
        )


# "1" forces the Triton kernel's 64-bit index path (tests cover both paths)
_INDEX64_ENV = "NOISEFORGE_LDP_INDEX64"


def _launch_triton(kernel, grid, x, out, p: _Plan, table, keys, seed, offset, bf16, block) -> None:
    kernel[grid](
        x,
        out,
        p.lower,
        p.upper,
        p.scale,
        table,
        keys,
        p.numel,
        p.d,
        p.copies,
        p.table_len,
        seed,
        offset,
        MECHANISM=MECHANISMS[p.mechanism],
        CLAMP=p.clamp,
        TABLE_BITS=p.table_bits,
        ROW_KEYS=p.keys is not None,
        OUT_BF16=bf16,
        BLOCK=block,
        INDEX32=p.numel + block < 2**31 and os.environ.get(_INDEX64_ENV) != "1",
        **B.triton_launch_options(),
    )


_EXACT = {torch.float32: (0.0, 0.0), torch.float16: (0.0, 0.0), torch.bfloat16: (0.0, 0.0)}
# Compiled GPU code is meant to be exact too (no FMA contraction, IEEE div/sqrt); the
# stated tolerance leaves room for a device conversion we have not yet measured.
_GPU = {torch.float32: (1e-6, 1e-6), torch.float16: (1e-3, 1e-3), torch.bfloat16: (1e-2, 1e-2)}

B.register_backends(
    OP,
    cuda=_run_cuda,
    triton=_run_triton,
    cpu=_run_cpu,
    torch_ref=_run_torch,
    tolerance=_EXACT,
    cuda_tolerance=_GPU,
)


# --------------------------------------------------------------------------- public op


def _check_out(out: torch.Tensor, shape: tuple[int, ...], p: _Plan) -> None:
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
    for name, t in (("x", p.source), ("x", p.x), ("keys", p.keys)):
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
    *,
    epsilon: float,
    lower: Bound,
    upper: Bound,
    mechanism: str = "laplace",
    delta: float | None = None,
    copies: int = 1,
    unit: str = "feature",
    levels: int | None = None,
    clamp: bool = True,
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

    with ``xi`` standard Laplace or standard normal, drawn from the Philox4x32-10
    stream at counter ``offset + (n * K + k) * D + j`` (with per-input ``keys``:
    the stream ``keys[n]`` at counter ``offset + k * D + j``); the outer clip is
    ``clamp`` (post-processing, free of privacy cost). ``discrete_laplace``
    quantises ``clip(x)`` to ``levels`` grid points and adds two-sided geometric
    integer noise, clamped to the grid.

    Parameters
    ----------
    x:
        (N, ...) float32, float16, bfloat16 or uint8 tensor (or numpy array), any
        strides, on CPU or CUDA. Feature shape ``x.shape[1:]`` has D elements.
    epsilon:
        Privacy parameter, > 0: per feature (``unit="feature"``) or per record.
    lower, upper:
        The domain, scalars or arrays broadcastable to the feature shape, with
        ``lower < upper``. Clipping to it is what bounds the sensitivity.
    mechanism:
        ``"laplace"`` (scale ``(u - l) / eps``), ``"gaussian"`` (analytic Gaussian
        calibration for ``(eps, delta)``), or ``"discrete_laplace"`` (hardened).
    delta:
        Gaussian only, in (0, 1).
    copies:
        K >= 1 independent noisy copies of every input.
    unit:
        ``"feature"``: each feature is an eps-LDP release; a record of D features is
        then ``D * eps``-LDP (basic composition). ``"record"``: the record is one
        eps-LDP release (noise calibrated to the L1 / L2 sensitivity of all features).
    levels:
        discrete_laplace only: grid points per feature (default 256, or
        ``upper - lower + 1`` for uint8 input).
    clamp:
        Clamp the noisy value back to the domain (always on for discrete_laplace).
    seed, generator, offset:
        Randomness. By default a **secret** OS-seeded stream that advances with
        every call (no stream is reused). ``seed=int`` uses a reproducible stream
        that also advances per call: **not private**, for experiments and tests.
        ``offset`` (with ``seed``) replays counters exactly and does not advance;
        replaying noise on the same data voids the privacy guarantee.
    keys:
        Optional (N,) int64 tensor or int64/uint64 array: input ``n`` draws from
        its own stream, Philox key ``keys[n]`` (the 64 bits), at counters
        ``offset + k * D + j`` (``offset`` defaults to 0). The noise of an input
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
        (0, 1), unknown mechanism, a mismatched ``out``; the message says what to do.
    BackendUnavailableError
        An explicit backend cannot run this input (the message lists why).
    """
    as_numpy = isinstance(x, np.ndarray)
    if as_numpy:
        x = torch.from_numpy(x)
    p = plan_ldp_noise(
        x,
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
    p: _Plan,
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
    # (a plan run again without keys must not keep the keys of an earlier run)
    p.keys = None if keys is None else _check_keys(keys, p.n, p.device)
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
        _check_out(out, shape, p)
    rec = registry.select(OP, backend, p, p.device.type)
    if keys is not None:
        key, start = 0, _check_offset(0 if offset is None else offset, p.copies * p.d)
    else:
        key, start = _draw_counters(p.numel, seed, generator, offset)
    if p.numel:
        rec.run(p, out.view(p.n, p.copies, p.d), key, start)
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
    if isinstance(offset, bool) or not isinstance(offset, Integral) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")
    if int(offset) + count > MAX_COUNTER:
        raise ValueError("offset + number of outputs exceeds the 2**63 counter space")
    return int(offset)


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


def ldp_noise_calibration(x: torch.Tensor | np.ndarray, **kwargs: Any) -> NoiseCalibration:
    """The :class:`NoiseCalibration` that :func:`ldp_noise` would use for these
    arguments (same validation and defaults), without drawing noise."""
    return plan_ldp_noise(x, **kwargs).calibration
