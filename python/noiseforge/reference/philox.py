"""Philox4x32-10 in plain PyTorch integer ops (the reference generator).

32-bit words are carried in int64 tensors (values in [0, 2^32)); a 32x32->64
product is split into two 32x16-bit products so that nothing overflows int64.
Same convention as ``csrc/include/noiseforge/philox.h`` and Triton's
``tl.randint4x``.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
ROUND_A = 0xD2511F53
ROUND_B = 0xCD9E8D57
KEY_A = 0x9E3779B9
KEY_B = 0xBB67AE85


def _mulhilo(a: torch.Tensor, const: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of ``a * const`` for 32-bit ``a`` held in int64."""
    c_lo = const & 0xFFFF
    c_hi = const >> 16
    t1 = a * c_lo  # < 2^48
    t2 = a * c_hi  # < 2^48
    lo = (((t2 & 0xFFFF) << 16) + t1) & MASK32
    hi = (t2 + (t1 >> 16)) >> 16
    return hi, lo


def philox4x32_10(
    counters: torch.Tensor, seed: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The four words (int64 tensors in [0, 2^32)) for int64 counters in [0, 2^63).

    ``seed``: one 64-bit key, or an int64 tensor of keys (their 64 bits; negative
    values are keys >= 2^63) that broadcasts against ``counters``.
    """
    c0 = counters & MASK32
    c1 = (counters >> 32) & MASK32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    k0 = seed & MASK32
    k1 = (seed >> 32) & MASK32  # an arithmetic shift: the mask keeps the 32 key bits
    for _ in range(10):
        hi0, lo0 = _mulhilo(c0, ROUND_A)
        hi1, lo1 = _mulhilo(c2, ROUND_B)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + KEY_A) & MASK32
        k1 = (k1 + KEY_B) & MASK32
    return c0, c1, c2, c3


def philox_words_reference(
    count: int, seed: int, offset: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(count, 4) int64 words for counters ``offset .. offset + count - 1``."""
    counters = torch.arange(count, dtype=torch.int64, device=device) + offset
    return torch.stack(philox4x32_10(counters, seed), dim=1)
