"""Triton kernel of the raw Philox words op (``noiseforge.ops.philox``).

The words come from ``tl.randint4x(seed, counter)``, the Philox4x32-10
convention every backend follows (``csrc/include/noiseforge/philox.h``); the
noise kernel (``kernels/ldp_noise.py``) draws its words the same way.
"""

from __future__ import annotations

import triton
import triton.language as tl


# seed and offset change on every call: not specialised (a value of 1 or a
# multiple of 16 would otherwise compile a new variant)
@triton.jit(do_not_specialize=["seed", "offset"])
def philox_words_kernel(out_ptr, count, seed, offset, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    i = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = i < count
    w0, w1, w2, w3 = tl.randint4x(seed, i + offset)
    tl.store(out_ptr + 4 * i + 0, w0.to(tl.int32, bitcast=True), mask=mask)
    tl.store(out_ptr + 4 * i + 1, w1.to(tl.int32, bitcast=True), mask=mask)
    tl.store(out_ptr + 4 * i + 2, w2.to(tl.int32, bitcast=True), mask=mask)
    tl.store(out_ptr + 4 * i + 3, w3.to(tl.int32, bitcast=True), mask=mask)
