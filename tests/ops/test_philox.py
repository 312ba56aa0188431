"""The raw Philox4x32-10 words: identical on every backend, equal to the
published known answer and to Triton's own tl.randint4x."""

from __future__ import annotations

import pytest
import torch

from noiseforge.ops import philox_words
from noiseforge.reference.philox import philox_words_reference
from tests.support.backends import backend_devices, require_backend, require_device

SEEDS = [0, 1, 0xDEADBEEF, (1 << 40) + 12345, (1 << 63) - 1]
OFFSETS = [0, 7, (1 << 32) - 3, (1 << 62)]


def test_known_answer_counter_zero_key_zero():
    # Random123's known-answer vector for Philox4x32-10 with counter 0 and key 0.
    words = philox_words_reference(1, 0, 0)[0].tolist()
    assert words == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize(("backend", "device"), backend_devices("philox_words"))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_words_bit_identical_to_reference(backend, device, seed, offset):
    require_device(device)
    require_backend("philox_words", backend, torch.device(device))
    count = 37  # odd, and crosses the 2^32 boundary for one of the offsets
    got = philox_words(count, seed=seed, offset=offset, device=device, backend=backend)
    want = philox_words_reference(count, seed, offset, device)
    assert got.dtype == torch.int64 and got.shape == (count, 4)
    assert torch.equal(got.cpu(), want.cpu())


@pytest.mark.parametrize(("backend", "device"), backend_devices("philox_words"))
def test_zero_words(backend, device):
    require_device(device)
    require_backend("philox_words", backend, torch.device(device))
    assert philox_words(0, seed=1, device=device, backend=backend).shape == (0, 4)


def test_matches_triton_randint4x():
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def draw(out_ptr, seed, offset, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK).to(tl.int64)
        a, b, c, d = tl.randint4x(seed, i + offset)
        tl.store(out_ptr + 4 * i, a.to(tl.int32, bitcast=True))
        tl.store(out_ptr + 4 * i + 1, b.to(tl.int32, bitcast=True))
        tl.store(out_ptr + 4 * i + 2, c.to(tl.int32, bitcast=True))
        tl.store(out_ptr + 4 * i + 3, d.to(tl.int32, bitcast=True))

    for seed in (3, (1 << 35) + 99):
        offset = (1 << 32) - 8
        raw = torch.empty((16, 4), dtype=torch.int32)
        draw[(1,)](raw, seed, offset, BLOCK=16)
        assert torch.equal(raw.long() & 0xFFFFFFFF, philox_words_reference(16, seed, offset))


def test_bad_arguments():
    with pytest.raises(ValueError, match="count"):
        philox_words(-1, seed=1)
    with pytest.raises(ValueError, match="seed"):
        philox_words(1, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        philox_words(1, seed=1.5)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        philox_words(2, seed=1, offset=(1 << 63) - 1)
