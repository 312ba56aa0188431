"""Triton kernel of the fused LDP noise op.

The same per-element contract as ``csrc/include/noiseforge/ldp_noise.h``: the
Philox words come from ``tl.randint4x(seed, counter)`` (the library generator
follows its convention) -- for laplace and gaussian one program lane per counter,
whose four words serve four consecutive elements of one input
(``ldp_noise_words4_kernel``), for discrete_laplace one lane per element -- and the uniform, log, erfinv, Laplace, Gaussian and
geometric transforms below repeat the C++ float32 operations in the same order.
IEEE division and square root (``div_rn``, ``sqrt_rn``) and a launch without FP
fusion keep compiled GPU results equal to the other backends.
"""

from __future__ import annotations

import triton
import triton.language as tl

# The raw Philox words kernel lives in kernels/philox.py; re-exported for old imports.
from noiseforge.kernels.philox import philox_words_kernel  # noqa: F401

MECH_LAPLACE = 0
MECH_GAUSSIAN = 1
MECH_DISCRETE = 2


@triton.jit
def _uniform_open01(w):
    return (((w >> 9) << 1) | 1).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def _log_f32(x):
    # Cephes single-precision log: x = m * 2^e, m in [sqrt(1/2), sqrt(2)).
    bits = x.to(tl.int32, bitcast=True)
    e = ((bits >> 23) & 0xFF) - 126
    m = ((bits & 0x007FFFFF) | 0x3F000000).to(tl.float32, bitcast=True)
    small = m < 0.707106781186547524
    e = tl.where(small, e - 1, e)
    m = tl.where(small, m + m, m)
    f = m - 1.0
    z = f * f
    p = f * 0.0 + 7.0376836292e-2
    p = p * f + -1.1514610310e-1
    p = p * f + 1.1676998740e-1
    p = p * f + -1.2420140846e-1
    p = p * f + 1.4249322787e-1
    p = p * f + -1.6668057665e-1
    p = p * f + 2.0000714765e-1
    p = p * f + -2.4999993993e-1
    p = p * f + 3.3333331174e-1
    fe = e.to(tl.float32)
    y = f * z
    y = y * p
    y = y + fe * -2.12194440e-4
    y = y - 0.5 * z
    r = f + y
    return r + fe * 0.693359375


@triton.jit
def _erfinv_f32(x):
    # Giles (2011), single precision; both branches evaluated, one selected.
    w = -_log_f32((1.0 - x) * (1.0 + x))
    a = w - 2.5
    p = a * 0.0 + 2.81022636e-08
    p = 3.43273939e-07 + p * a
    p = -3.5233877e-06 + p * a
    p = -4.39150654e-06 + p * a
    p = 0.00021858087 + p * a
    p = -0.00125372503 + p * a
    p = -0.00417768164 + p * a
    p = 0.246640727 + p * a
    p = 1.50140941 + p * a
    b = tl.math.sqrt_rn(w) - 3.0
    q = b * 0.0 + -0.000200214257
    q = 0.000100950558 + q * b
    q = 0.00134934322 + q * b
    q = -0.00367342844 + q * b
    q = 0.00573950773 + q * b
    q = -0.0076224613 + q * b
    q = 0.00943887047 + q * b
    q = 1.00167406 + q * b
    q = 2.83297682 + q * b
    return tl.where(w < 5.0, p, q) * x


@triton.jit
def _store(out_ptr, e, result, mask, OUT_BF16: tl.constexpr):
    if OUT_BF16:
        # Round to nearest even with integer ops (out_ptr is the int16 view of the
        # bfloat16 output): the interpreter's own conversion truncates.
        bits = result.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        tl.store(out_ptr + e, (bits >> 16).to(tl.uint16).to(tl.int16, bitcast=True), mask=mask)
    else:
        tl.store(out_ptr + e, result.to(out_ptr.dtype.element_ty), mask=mask)


# seed and offset change on every call: not specialised (a value of 1 or a
# multiple of 16 would otherwise compile a new variant)
@triton.jit(do_not_specialize=["seed", "offset"])
def ldp_noise_kernel(
    x_ptr,
    out_ptr,
    lower_ptr,
    upper_ptr,
    scale_ptr,
    table_ptr,
    keys_ptr,
    total,
    D,
    K,
    per_input,
    table_len,
    seed,
    offset,
    MECHANISM: tl.constexpr,
    CLAMP: tl.constexpr,
    TABLE_BITS: tl.constexpr,
    ROW_KEYS: tl.constexpr,
    OUT_BF16: tl.constexpr,
    BLOCK: tl.constexpr,
    INDEX32: tl.constexpr,
):
    """``total`` lanes of ``BLOCK`` per program: for laplace and gaussian a lane is a
    counter (``per_input`` counters per input, four elements each), for
    discrete_laplace an output element (a counter each)."""
    if MECHANISM == 2:
        _discrete_lanes(
            x_ptr, out_ptr, lower_ptr, upper_ptr, scale_ptr, table_ptr, keys_ptr, total, D, K,
            table_len, seed, offset, TABLE_BITS, ROW_KEYS, OUT_BF16, BLOCK, INDEX32,
        )  # fmt: skip
    else:
        _counter_lanes(
            x_ptr, out_ptr, lower_ptr, upper_ptr, scale_ptr, keys_ptr, total, D, K, per_input,
            seed, offset, MECHANISM, CLAMP, ROW_KEYS, OUT_BF16, BLOCK, INDEX32,
        )  # fmt: skip


@triton.jit
def _counter_lanes(
    x_ptr, out_ptr, lower_ptr, upper_ptr, scale_ptr, keys_ptr, total, D, K, per_input, seed,
    offset, MECHANISM: tl.constexpr, CLAMP: tl.constexpr, ROW_KEYS: tl.constexpr,
    OUT_BF16: tl.constexpr, BLOCK: tl.constexpr, INDEX32: tl.constexpr,
):  # fmt: skip
    # lane g = input * per_input + c is counter c of its input; its words w0..w3
    # are elements l = 4 c .. 4 c + 3 (l = k * D + d) of that input
    pid = tl.program_id(0).to(tl.int64)
    g = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    live = g < total
    kd = K.to(tl.int64) * D
    if INDEX32:  # every index fits: 32-bit divisions (emulated, but far cheaper than 64-bit)
        g32 = g.to(tl.int32)
        inp32 = g32 // per_input
        c = (g32 - inp32 * per_input).to(tl.int64)
        inp = inp32.to(tl.int64)
    else:
        inp = g // per_input
        c = g - inp * per_input
    if ROW_KEYS:  # the input's own stream: key keys[n], counters from offset
        key = tl.load(keys_ptr + inp, mask=live, other=0).to(tl.uint64, bitcast=True)
        w0, w1, w2, w3 = tl.randint4x(key, c + offset)
    else:  # one stream: input n's counters from offset + n * per_input, i.e. offset + g
        w0, w1, w2, w3 = tl.randint4x(seed, g + offset)
    # (BLOCK, 4): row i holds the words of lane i in order, one element each
    # (join stacks on a new last axis: [i, p, q] is word 2 q + p before the reshape)
    w = tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), (BLOCK, 4))
    el = c[:, None] * 4 + tl.arange(0, 4)[None, :].to(tl.int64)
    mask = live[:, None] & (el < kd)
    if INDEX32:
        l32 = el.to(tl.int32)
        d = (l32 - (l32 // D) * D).to(tl.int64)
    else:
        d = el - (el // D) * D
    xv = tl.load(x_ptr + inp[:, None] * D + d, mask=mask, other=0).to(tl.float32)
    lo = tl.load(lower_ptr + d, mask=mask, other=0.0)
    hi = tl.load(upper_ptr + d, mask=mask, other=1.0)
    sc = tl.load(scale_ptr + d, mask=mask, other=1.0)
    xc = tl.minimum(tl.maximum(xv, lo), hi)
    if MECHANISM == 0:  # magnitude from the top 23 bits, the sign from the low bit
        mag_f = -_log_f32(_uniform_open01(w))
        unit = tl.where((w & 1) == 1, -mag_f, mag_f)
    else:
        t = _uniform_open01(w) * 2.0 - 1.0
        unit = 1.41421356237309505 * _erfinv_f32(t)
    result = xc + unit * sc
    if CLAMP:
        result = tl.minimum(tl.maximum(result, lo), hi)
    _store(out_ptr, inp[:, None] * kd + el, result, mask, OUT_BF16)


@triton.jit
def _discrete_lanes(
    x_ptr, out_ptr, lower_ptr, upper_ptr, scale_ptr, table_ptr, keys_ptr, total, D, K,
    table_len, seed, offset, TABLE_BITS: tl.constexpr, ROW_KEYS: tl.constexpr,
    OUT_BF16: tl.constexpr, BLOCK: tl.constexpr, INDEX32: tl.constexpr,
):  # fmt: skip
    # lane e is output element e = (n * K + k) * D + d: counter base(n) + k * D + d,
    # base(n) = offset + n * K * D (one counter per element), or offset with keys
    pid = tl.program_id(0).to(tl.int64)
    e = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = e < total
    if INDEX32:
        e32 = e.to(tl.int32)
        row = e32 // D
        d = e32 - row * D
    else:
        row = e // D
        d = e - row * D
    inp = row // K
    xv = tl.load(x_ptr + inp * D + d, mask=mask, other=0).to(tl.float32)
    lo = tl.load(lower_ptr + d, mask=mask, other=0.0)
    hi = tl.load(upper_ptr + d, mask=mask, other=1.0)
    sc = tl.load(scale_ptr + d, mask=mask, other=1.0)
    if ROW_KEYS:  # the input's own stream: key keys[n], counter offset + k * D + d
        key = tl.load(keys_ptr + inp, mask=mask, other=0).to(tl.uint64, bitcast=True)
        w0, w1, w2, _w3 = tl.randint4x(key, e - inp.to(tl.int64) * K * D + offset)
    else:
        w0, w1, w2, _w3 = tl.randint4x(seed, e + offset)
    xc = tl.minimum(tl.maximum(xv, lo), hi)
    v = tl.math.div_rn(xc - lo, sc) + 0.5
    q = v.to(tl.int32)  # v >= 0, truncation is floor
    q = tl.minimum(q, table_len)
    u = (w1.to(tl.uint64) << 32) | w0.to(tl.uint64)
    mag = tl.zeros_like(q)
    for i in tl.static_range(TABLE_BITS):
        cand = mag + (1 << (TABLE_BITS - 1 - i))
        ok = cand <= table_len
        t = tl.load(table_ptr + (cand - 1), mask=mask & ok, other=0).to(tl.uint64, bitcast=True)
        mag = tl.where(ok & (u < t), cand, mag)
    y = tl.where((w2 & 1) == 1, q - mag, q + mag)
    y = tl.minimum(tl.maximum(y, 0), table_len)
    _store(out_ptr, e, lo + y.to(tl.float32) * sc, mask, OUT_BF16)
