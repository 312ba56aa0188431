"""The multilingual relevance data engine (Query-Category and Query-Item).

Improve a relevance model by changing its training data, not the model:
translation augmentation into missing languages, semantic hard negatives mined
with the native HNSW index, self-validation filtering of mislabelled rows, then
train any model and evaluate it against the all-relevant baseline.

- :mod:`~noiseforge.relevance.data`: load / validate / write competition files;
- :mod:`~noiseforge.relevance.translate`: translators (Apertium, FreeDict, local HF
  models) and :func:`augment_translations`;
- :mod:`~noiseforge.relevance.embed`: encoders and an on-disk embedding cache;
- :mod:`~noiseforge.relevance.mining`: :func:`mine_semantic_negatives`;
- :mod:`~noiseforge.relevance.filtering`: :func:`self_validation_filter`;
- :mod:`~noiseforge.relevance.model`: :class:`EmbeddingMLP` (default), HF cross-encoder,
  a causal LM judged by p(yes) (LoRA with peft), :func:`tune_threshold`;
- :mod:`~noiseforge.relevance.evaluate`: F1 with bootstrap intervals, the ablation table;
- :mod:`~noiseforge.relevance.pipeline`: :func:`run`, the whole ablation.
"""

from noiseforge.relevance.data import RelevanceDataError, load, summary, validate, write
from noiseforge.relevance.embed import HashingEncoder, HFEncoder, USEEncoder, embed_cached
from noiseforge.relevance.evaluate import ablation, evaluate, format_ablation
from noiseforge.relevance.filtering import self_validation_filter
from noiseforge.relevance.fixture import make_fixture
from noiseforge.relevance.mining import add_semantic_negatives, mine_semantic_negatives
from noiseforge.relevance.model import EmbeddingMLP, HFCrossEncoder, HFYesNoJudge, tune_threshold
from noiseforge.relevance.pipeline import RunConfig, Strategies, run
from noiseforge.relevance.translate import (
    ApertiumTranslator,
    FreeDictTranslator,
    HFTranslator,
    TranslationUnavailable,
    augment_translations,
    auto_translator,
)

__all__ = [
    "ApertiumTranslator",
    "EmbeddingMLP",
    "FreeDictTranslator",
    "HFCrossEncoder",
    "HFEncoder",
    "HFTranslator",
    "HFYesNoJudge",
    "HashingEncoder",
    "RelevanceDataError",
    "RunConfig",
    "Strategies",
    "TranslationUnavailable",
    "USEEncoder",
    "ablation",
    "add_semantic_negatives",
    "augment_translations",
    "auto_translator",
    "embed_cached",
    "evaluate",
    "format_ablation",
    "load",
    "make_fixture",
    "mine_semantic_negatives",
    "run",
    "self_validation_filter",
    "summary",
    "tune_threshold",
    "validate",
    "write",
]
