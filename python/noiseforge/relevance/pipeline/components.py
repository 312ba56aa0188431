"""What a relevance run is built from: the encoder, model and translator a
:class:`~noiseforge.relevance.pipeline.config.RunConfig` names, the labelled rows
it reads, its training and unseen languages, and the split by query into
train / dev / test."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from noiseforge.relevance.data import load
from noiseforge.relevance.embed import Encoder, HashingEncoder, HFEncoder, USEEncoder
from noiseforge.relevance.fixture import make_fixture
from noiseforge.relevance.groups import query_key
from noiseforge.relevance.model import EmbeddingMLP, RelevanceModel
from noiseforge.relevance.pipeline.config import FIXTURE_NOISE, TRANSLATORS, RunConfig
from noiseforge.relevance.translate import (
    ApertiumTranslator,
    CachedTranslator,
    FreeDictTranslator,
    Translator,
)


def make_encoder(spec: str) -> Encoder:
    """``"use"`` (multilingual USE v3, default), ``"hashing"`` (no model: shared
    words only) or a local Hugging Face / sentence-transformers model path."""
    if spec == "use":
        return USEEncoder()
    if spec == "hashing":
        return HashingEncoder(dim=128)
    if Path(spec).exists():
        return HFEncoder(spec)
    raise ValueError(
        f"encoder {spec!r} is neither 'use', 'hashing' nor an existing local model folder"
    )


def make_model_factory(
    spec: str, progress: bool = True
) -> Callable[[Encoder, int], RelevanceModel]:
    """``(encoder, seed) -> model`` for a RunConfig ``model`` string."""
    kind, _, where = spec.partition(":")
    if spec == "embedding-mlp":
        return lambda enc, seed: EmbeddingMLP(encoder=enc, seed=seed, progress=progress)
    if kind == "cross-encoder" and where:
        from noiseforge.relevance.model import HFCrossEncoder

        return lambda enc, seed: HFCrossEncoder(where, seed=seed)
    if kind == "llm-judge" and where:
        import importlib.util

        from noiseforge.relevance.model import HFYesNoJudge

        lora = importlib.util.find_spec("peft") is not None
        return lambda enc, seed: HFYesNoJudge(where, lora=lora, seed=seed)
    raise ValueError(
        f"model {spec!r}: use 'embedding-mlp', 'cross-encoder:<local path>' or "
        "'llm-judge:<local path>'"
    )


def make_translator(name: str) -> Translator | str:
    """``"auto"`` picks per language pair; ``"apertium"`` / ``"freedict"`` force one
    backend (through the disk cache)."""
    if name == "auto":
        return name
    if name == "apertium":
        return CachedTranslator(ApertiumTranslator())
    if name == "freedict":
        return CachedTranslator(FreeDictTranslator())
    raise ValueError(f"translator {name!r}: choose one of {', '.join(TRANSLATORS)}")


def load_rows(cfg: RunConfig) -> tuple[pd.DataFrame, str]:
    """The labelled rows to work on and a one-line description of where they come from."""
    if not cfg.data:
        parts = [
            make_fixture("QC", cfg.fixture_rows, seed=cfg.seed, label_noise=FIXTURE_NOISE),
            make_fixture("QI", cfg.fixture_rows, seed=cfg.seed + 1, label_noise=FIXTURE_NOISE),
        ]
        rows = pd.concat(parts, ignore_index=True)
        return rows, (
            f"GENERATED fixture ({len(rows)} rows made by noiseforge.relevance.fixture, "
            f"{FIXTURE_NOISE:.0%} of labels flipped on purpose; not real data: point --data at "
            "competition files for real results)"
        )
    rows = load(cfg.data)
    synthetic = rows["strategy"] != "original"
    if synthetic.any():
        kinds = ", ".join(sorted(set(rows.loc[synthetic, "strategy"])))
        raise ValueError(
            f"{int(synthetic.sum())} input rows are synthesized ({kinds}): run() splits original "
            "rows and synthesizes from the training part itself, so a translation or mined row "
            "of a test query would leak; give the original files (or drop rows whose strategy "
            "is not 'original')"
        )
    unlabelled = int((rows["label"] < 0).sum())
    rows = rows[rows["label"] >= 0].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{cfg.data}: no labelled rows (label 0/1) to train and evaluate on")
    what = f"{len(rows)} labelled rows from {', '.join(map(str, cfg.data))}"
    if unlabelled:
        what += f" ({unlabelled} unlabelled rows set aside: they cannot be scored)"
    return rows, what


def languages(cfg: RunConfig, rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The run's training and unseen languages (see :class:`RunConfig`); raises
    ValueError when one has no rows or a language is in both lists."""
    present = sorted(rows["language"].unique())
    if cfg.train_languages is not None:
        train = list(cfg.train_languages)
    elif not cfg.data:
        train = ["en", "fr", "es", "pt"]
    else:  # the competition's training languages (th: QI only)
        train = [x for x in ("en", "fr", "es", "ko", "pt", "ja", "th") if x in present]
    unseen = (
        list(cfg.unseen_languages)
        if cfg.unseen_languages is not None
        else [x for x in present if x not in train]
    )
    missing = [x for x in train if x not in present]
    if missing or not train:
        raise ValueError(
            f"training language(s) {missing or train} have no rows; the data has {present}: "
            "set train_languages"
        )
    overlap = sorted(set(train) & set(unseen))
    if overlap:
        raise ValueError(f"languages {overlap} are both training and unseen languages")
    empty = [x for x in unseen if x not in present]
    if empty:
        raise ValueError(
            f"unseen language(s) {empty} have no rows; the data has {present}: fix unseen_languages"
        )
    return train, unseen


def _uniform(key: str, seed: int) -> float:
    """A query's fixed draw in [0, 1): independent of row order and file layout."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def split(
    rows: pd.DataFrame, train_languages: Sequence[str], cfg: RunConfig
) -> dict[str, pd.DataFrame]:
    """train / dev / test: each query (lower-cased) of the training languages goes to
    exactly one part by a seeded hash; every row of another language is a test row, and
    so is a training-language row whose query also occurs in another language (no query
    is ever on both sides)."""
    seen = rows["language"].isin(list(train_languages)).to_numpy()
    keys = query_key(rows["query"])
    u = keys.map({k: _uniform(k, cfg.seed) for k in pd.unique(keys)}).to_numpy()
    shared = keys.isin(set(keys[~seen])).to_numpy()
    part = np.full(len(rows), "test", dtype=object)
    part[seen & ~shared & (u >= cfg.dev_fraction + cfg.test_fraction)] = "train"
    part[seen & ~shared & (u < cfg.dev_fraction)] = "dev"
    return {p: rows[part == p].reset_index(drop=True) for p in ("train", "dev", "test")}
