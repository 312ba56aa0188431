"""The shared embedding cache: each distinct text encoded once per encoder, new texts
appended as new shards, a damaged shard a clear error, and writers in two processes
at once leaving one readable cache."""

from __future__ import annotations

import hashlib
import multiprocessing

import numpy as np
import pytest

from noiseforge._common.embedding_cache import (
    TextEncoder,
    embed_cached,
    encoder_dir,
    load_shards,
    text_key,
)


class CountingEncoder:
    """Deterministic fake: a text's vector is seeded by its SHA-1; counts encode calls."""

    def __init__(self, dim: int = 6, name: str = "counting") -> None:
        self.dim, self.name = dim, name
        self.calls = 0
        self.texts: list[str] = []

    def encode(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        return np.stack([_vector(t, self.dim) for t in texts]).astype(np.float32)


def _vector(text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def _expected(texts, dim: int = 6) -> np.ndarray:
    return np.stack([_vector(t, dim) for t in texts])


def _shards(folder):
    return sorted(p.stem for p in folder.glob("*.keys"))


def test_counting_encoder_is_a_text_encoder():
    assert isinstance(CountingEncoder(), TextEncoder)


def test_texts_are_reused_without_encoding_again(tmp_path):
    enc = CountingEncoder()
    texts = ["a", "b", "a", "é", ""]
    first = embed_cached(enc, texts, cache_dir=tmp_path, batch_size=2)
    assert enc.calls == 2 and sorted(enc.texts) == ["", "a", "b", "é"]  # 4 distinct, 2 a call
    assert first.shape == (5, 6) and first.dtype == np.float32
    np.testing.assert_array_equal(first, _expected(texts))
    again = embed_cached(enc, ["é", "a"], cache_dir=tmp_path)
    assert enc.calls == 2
    np.testing.assert_array_equal(again, _expected(["é", "a"]))
    fresh = CountingEncoder()  # another encoder object of the same name: reads the disk
    np.testing.assert_array_equal(embed_cached(fresh, texts, cache_dir=tmp_path), first)
    assert fresh.calls == 0


def test_a_new_text_is_appended_as_a_new_shard(tmp_path):
    enc = CountingEncoder()
    embed_cached(enc, ["a", "b"], cache_dir=tmp_path)
    folder = encoder_dir(tmp_path, enc)
    assert folder == tmp_path / "counting-d6"
    (old,) = _shards(folder)
    old_bytes = (folder / f"{old}.npy").read_bytes(), (folder / f"{old}.keys").read_text()
    out = embed_cached(enc, ["b", "c", "a"], cache_dir=tmp_path)
    assert enc.texts == ["a", "b", "c"]
    new = [s for s in _shards(folder) if s != old]
    assert len(new) == 1 and len(_shards(folder)) == 2
    assert (folder / f"{new[0]}.keys").read_text().split() == [text_key("c")]
    assert np.load(folder / f"{new[0]}.npy").shape == (1, 6)
    # the first shard is never rewritten
    assert ((folder / f"{old}.npy").read_bytes(), (folder / f"{old}.keys").read_text()) == old_bytes
    np.testing.assert_array_equal(out, _expected(["b", "c", "a"]))
    assert sorted(load_shards(folder, 6)) == sorted(text_key(t) for t in "abc")


def test_a_shard_that_does_not_match_its_keys_is_a_clear_error(tmp_path):
    enc = CountingEncoder()
    embed_cached(enc, ["a", "b"], cache_dir=tmp_path)
    folder = encoder_dir(tmp_path, enc)
    (shard,) = _shards(folder)
    np.save(folder / f"{shard}.npy", np.zeros((1, 6), np.float32))  # 2 keys, 1 vector
    with pytest.raises(
        ValueError, match=r"has shape \(1, 6\), expected \(2, 6\); delete .* rebuild"
    ):
        embed_cached(enc, ["a"], cache_dir=tmp_path)


def test_an_unreadable_shard_is_a_clear_error(tmp_path):
    enc = CountingEncoder()
    embed_cached(enc, ["a", "b"], cache_dir=tmp_path)
    folder = encoder_dir(tmp_path, enc)
    (shard,) = _shards(folder)
    vectors = folder / f"{shard}.npy"
    vectors.write_bytes(vectors.read_bytes()[:20])  # cut inside the header
    with pytest.raises(ValueError, match=r"cannot be read.*delete .* rebuild"):
        embed_cached(enc, ["a"], cache_dir=tmp_path)


def test_a_vectors_file_without_its_keys_is_not_an_entry(tmp_path):
    enc = CountingEncoder()
    embed_cached(enc, ["a"], cache_dir=tmp_path)
    np.save(encoder_dir(tmp_path, enc) / "orphan.npy", np.zeros((1, 6), np.float32))
    embed_cached(enc, ["a", "b"], cache_dir=tmp_path)
    assert enc.texts == ["a", "b"]


def test_a_wrong_shape_from_the_encoder_is_an_error_and_writes_nothing(tmp_path):
    class Bad(CountingEncoder):
        def encode(self, texts):
            return np.zeros((len(texts), 3), np.float32)

    with pytest.raises(ValueError, match=r"expected \(1, 6\)"):
        embed_cached(Bad(), ["x"], cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.keys"))


def test_progress_is_reported_for_the_texts_to_encode(tmp_path):
    class Report:
        def __init__(self, total: int, desc: str) -> None:
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            reports.append(self)

        def update(self, n: int = 1) -> None:
            self.n += n

        def close(self) -> None:
            self.closed = True

    reports: list[Report] = []
    enc = CountingEncoder()
    embed_cached(enc, list("abcde"), cache_dir=tmp_path, batch_size=2, make_progress=Report)
    embed_cached(enc, list("abc"), cache_dir=tmp_path, make_progress=Report)  # all cached
    ((report,),) = [reports]
    assert (report.total, report.n, report.closed) == (5, 5, True)
    assert report.desc == "embedding (counting)"


WRITER_TEXTS = [f"text {i}" for i in range(60)]


def _writer(cache_dir: str, seed: int, start) -> None:
    """One of two racing processes: 12 rounds of overlapping random batches."""
    rng = np.random.default_rng(seed)
    enc = CountingEncoder()
    start.wait(timeout=60)
    for _ in range(12):
        pick = [WRITER_TEXTS[i] for i in rng.choice(len(WRITER_TEXTS), 8, replace=False)]
        out = embed_cached(enc, pick, cache_dir=cache_dir)
        if not np.array_equal(out, _expected(pick)):
            raise AssertionError(f"writer {seed} read wrong vectors")


def test_two_processes_writing_at_once_leave_a_readable_cache(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), seed, start)) for seed in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    enc = CountingEncoder()
    folder = encoder_dir(tmp_path, enc)
    cached = load_shards(folder, 6)
    assert cached and set(cached) <= {text_key(t) for t in WRITER_TEXTS}
    assert not [p for p in folder.iterdir() if p.suffix not in (".npy", ".keys")]  # no temp
    seen = [t for t in WRITER_TEXTS if text_key(t) in cached]
    np.testing.assert_array_equal(embed_cached(enc, seen, cache_dir=tmp_path), _expected(seen))
    assert enc.calls == 0
