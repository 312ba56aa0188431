"""Reference (torch backend) of the fused LDP noise op.

Follows ``csrc/include/noiseforge/ldp_noise.h`` and ``noise_math.h`` float32
operation by float32 operation; every intermediate is float32 and no op fuses
a multiply with an add, so the result equals the C++ backend bit for bit.
"""

from __future__ import annotations

import torch

from noiseforge.reference.philox import philox4x32_10

_F32 = torch.float32

# Cephes single-precision log polynomial (highest degree first).
_LOG_POLY = (
    7.0376836292e-2,
    -1.1514610310e-1,
    1.1676998740e-1,
    -1.2420140846e-1,
    1.4249322787e-1,
    -1.6668057665e-1,
    2.0000714765e-1,
    -2.4999993993e-1,
    3.3333331174e-1,
)
# Giles (2011) single-precision erfinv, central (w < 5) and tail branches.
_ERFINV_CENTRAL = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
)
_ERFINV_TAIL = (
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
)


def _f(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=_F32)


def uniform_open01(w: torch.Tensor) -> torch.Tensor:
    """int64 words in [0, 2^32) -> float32 (2 * (w >> 9) + 1) * 2^-24."""
    return (((w >> 9) << 1) | 1).to(_F32) * _f(5.9604644775390625e-08)


def log_f32(x: torch.Tensor) -> torch.Tensor:
    bits = x.view(torch.int32).to(torch.int64)
    e = ((bits >> 23) & 0xFF) - 126
    m = ((bits & 0x007FFFFF) | 0x3F000000).to(torch.int32).view(_F32)
    small = m < _f(0.707106781186547524)
    e = torch.where(small, e - 1, e)
    m = torch.where(small, m + m, m)
    f = m - _f(1.0)
    z = f * f
    p = torch.full_like(f, _LOG_POLY[0])
    for c in _LOG_POLY[1:]:
        p = p * f + _f(c)
    fe = e.to(_F32)
    y = f * z
    y = y * p
    y = y + fe * _f(-2.12194440e-4)
    y = y - _f(0.5) * z
    r = f + y
    return r + fe * _f(0.693359375)


def sqrt_f32(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 square root of non-negative finite x.

    ``torch.sqrt`` on float32 CPU tensors is not correctly rounded on every CPU
    (on some AMD machines its vectorized path is off by an ulp for ~15 % of inputs),
    so take the root in float64, round it, and move it by one ulp if x lies on the
    other side of a rounding midpoint. A midpoint has 25 significant bits, so its
    square (50 bits) and the comparison are exact in float64.
    """
    xd = x.to(torch.float64)
    s = torch.sqrt(xd).to(_F32)
    up = torch.nextafter(s, _f(float("inf")))
    down = torch.nextafter(s, _f(0.0))
    sd = s.to(torch.float64)
    mid_up = (sd + up.to(torch.float64)) * 0.5
    mid_down = (sd + down.to(torch.float64)) * 0.5
    s = torch.where(xd >= mid_up * mid_up, up, s)
    return torch.where(xd < mid_down * mid_down, down, s)


def erfinv_f32(x: torch.Tensor) -> torch.Tensor:
    w = -log_f32((_f(1.0) - x) * (_f(1.0) + x))
    a = w - _f(2.5)
    p = torch.full_like(a, _ERFINV_CENTRAL[0])
    for c in _ERFINV_CENTRAL[1:]:
        p = _f(c) + p * a
    b = sqrt_f32(w) - _f(3.0)
    q = torch.full_like(b, _ERFINV_TAIL[0])
    for c in _ERFINV_TAIL[1:]:
        q = _f(c) + q * b
    return torch.where(w < _f(5.0), p, q) * x


def laplace_unit(w: torch.Tensor) -> torch.Tensor:
    """Exp(1) magnitude from the top 23 bits of the word, the sign from its low bit."""
    mag = -log_f32(uniform_open01(w))
    return torch.where((w & 1) == 1, -mag, mag)


def gaussian_unit(w0: torch.Tensor) -> torch.Tensor:
    t = uniform_open01(w0) * _f(2.0) - _f(1.0)
    return _f(1.41421356237309505) * erfinv_f32(t)


def geometric_magnitude(
    w0: torch.Tensor, w1: torch.Tensor, table: torch.Tensor, table_len: int
) -> torch.Tensor:
    """Number of thresholds above the 64-bit uniform ``(w1 << 32) | w0``.

    ``table`` holds uint64 values in an int64 tensor; the comparison is made
    unsigned by flipping the sign bit of both sides.
    """
    flip = -(1 << 63)
    u = ((w1 << 32) | w0) ^ flip  # int64 wraps; order now matches unsigned order
    ascending = (table.to(torch.int64) ^ flip).flip(0).contiguous()
    # the table is non-increasing: the thresholds above u form a prefix
    below_or_equal = torch.searchsorted(ascending, u.reshape(-1), right=True)
    return (table_len - below_or_equal).reshape(u.shape)


#: Output elements that share the four words of one Philox counter: laplace and
#: gaussian read one 32-bit word per element; discrete_laplace needs 65 random bits
#: (a 64-bit uniform and a sign), so it keeps a counter per element.
ELEMENTS_PER_COUNTER = {"laplace": 4, "gaussian": 4, "discrete_laplace": 1}


def counters_per_input(mechanism: str, copies: int, features: int) -> int:
    """Philox counters one input's ``copies x features`` outputs use:
    ``ceil(copies * features / E)``. A call without keys uses ``N`` times this,
    input ``n`` from counter ``offset + n * counters_per_input(...)``."""
    e = ELEMENTS_PER_COUNTER[mechanism]
    return -(-copies * features // e)


def element_words(
    n: int,
    copies: int,
    d: int,
    mechanism: str,
    seed: int,
    offset: int,
    keys: torch.Tensor | None,
    device: torch.device | str,
) -> tuple[torch.Tensor, ...]:
    """The Philox words of every (n, k, j) output element, as (N, K, D) int64 tensors:
    one word for laplace and gaussian (word ``l % 4`` of counter ``l // 4``,
    ``l = k * D + j``), the words (w0, w1, w2) of counter ``l`` for discrete_laplace;
    counters from ``offset + n * counters_per_input`` of stream ``seed``, or from
    ``offset`` of stream ``keys[n]``."""
    e = ELEMENTS_PER_COUNTER[mechanism]
    per = counters_per_input(mechanism, copies, d)
    local = torch.arange(per, dtype=torch.int64, device=device).reshape(1, per) + offset
    if keys is None:
        inputs = torch.arange(n, dtype=torch.int64, device=device).reshape(n, 1)
        words = philox4x32_10(local + inputs * per, seed)
    else:
        words = philox4x32_10(local.expand(n, per), keys.to(device).reshape(n, 1))
    if e == 4:
        w = torch.stack(words, dim=2).reshape(n, per * 4)[:, : copies * d]
        return (w.reshape(n, copies, d),)
    return tuple(w.reshape(n, copies, d) for w in words[:3])


def ldp_noise_reference(
    x: torch.Tensor,
    *,
    mechanism: str,
    lower: torch.Tensor,
    upper: torch.Tensor,
    scale: torch.Tensor,
    copies: int,
    clamp: bool,
    seed: int,
    offset: int,
    out_dtype: torch.dtype,
    table: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, D) input -> (N, K, D) output, as the contract in ``ldp_noise.h``.

    ``lower``, ``upper``, ``scale`` are float32 (D,); ``table`` the int64 view
    of the uint64 thresholds for ``discrete_laplace``; ``keys`` optional (N,)
    int64 per-input Philox keys (input n: stream ``keys[n]`` from counter
    ``offset``; ``seed`` is then unused). The words of each element:
    :func:`element_words`.
    """
    n, d = x.shape
    device = x.device
    lower = lower.to(device=device, dtype=_F32)
    upper = upper.to(device=device, dtype=_F32)
    scale = scale.to(device=device, dtype=_F32)
    xf = x.to(_F32).unsqueeze(1).expand(n, copies, d)
    words = element_words(n, copies, d, mechanism, seed, offset, keys, device)
    xc = torch.minimum(torch.maximum(xf, lower), upper)
    if mechanism == "discrete_laplace":
        assert table is not None
        table_len = table.numel()
        v = (xc - lower) / scale + _f(0.5)
        q = torch.clamp(v.to(torch.int64), max=table_len)  # v >= 0: truncation is floor
        w0, w1, w2 = words
        mag = geometric_magnitude(w0, w1, table.to(device), table_len)
        y = torch.where((w2 & 1) == 1, q - mag, q + mag).clamp(0, table_len)
        result = lower + y.to(_F32) * scale
    else:
        (w,) = words
        unit = laplace_unit(w) if mechanism == "laplace" else gaussian_unit(w)
        result = xc + unit * scale
        if clamp:
            result = torch.minimum(torch.maximum(result, lower), upper)
    return result.to(out_dtype)
