"""Query translation: offline backends, a disk cache and translation augmentation.

Backends (each a :class:`Translator`):

* :class:`ApertiumTranslator` -- Debian Apertium pairs (rule-based MT) through the
  ``apertium`` binary, one process per batch, pivoting through Spanish or English.
* :class:`FreeDictTranslator` -- Debian FreeDict bilingual dictionaries (dictd files),
  phrase-first longest match on lower-cased tokens; suits short product queries.
* :class:`HFTranslator` -- any local Hugging Face seq2seq or causal LM.

Language codes are the table's two-letter codes (en, fr, es, de, it, pl, ar, pt, ...).

Where each piece lives (every name is importable from here too):

- :mod:`~noiseforge.relevance.translate.base`: the language tables (:data:`ISO3`,
  :data:`LANGUAGE_NAMES`, :func:`to_iso2`), :class:`TranslationUnavailable` and the
  :class:`Translator` interface;
- :mod:`~noiseforge.relevance.translate.freedict`: the dictd format (:func:`dictd_number`,
  :func:`dictd_key`, :func:`first_translation`, :class:`DictdDictionary`) and
  :class:`FreeDictTranslator`;
- :mod:`~noiseforge.relevance.translate.apertium`: :class:`ApertiumTranslator`;
- :mod:`~noiseforge.relevance.translate.hf`: :class:`HFTranslator`;
- :mod:`~noiseforge.relevance.translate.cache`: :class:`TranslationCache` and
  :class:`CachedTranslator`;
- :mod:`~noiseforge.relevance.translate.discovery`: :func:`available_translators`,
  :func:`auto_translator` and :func:`install_hint`;
- :mod:`noiseforge.relevance.augment`: :func:`augment_translations` and
  :func:`untranslatable_pairs`, re-exported here on first use (that module imports this
  package, never the other way round).

The private helpers that tests and older callers import from here (``_B64``, ``_join``,
``_BACKENDS``, ...) are re-exported under their own names as well.
"""

from __future__ import annotations

import importlib
from typing import Any

from noiseforge.relevance.translate.apertium import ApertiumTranslator
from noiseforge.relevance.translate.base import _ISO2 as _ISO2
from noiseforge.relevance.translate.base import (
    ISO3,
    LANGUAGE_NAMES,
    TranslationUnavailable,
    Translator,
    to_iso2,
)
from noiseforge.relevance.translate.cache import CachedTranslator, TranslationCache
from noiseforge.relevance.translate.discovery import _BACKENDS as _BACKENDS
from noiseforge.relevance.translate.discovery import (
    auto_translator,
    available_translators,
    install_hint,
)
from noiseforge.relevance.translate.freedict import _B64 as _B64
from noiseforge.relevance.translate.freedict import _B64_VALUE as _B64_VALUE
from noiseforge.relevance.translate.freedict import _BRACKETS as _BRACKETS
from noiseforge.relevance.translate.freedict import _TOKEN as _TOKEN
from noiseforge.relevance.translate.freedict import (
    FREEDICT_RULES,
    DictdDictionary,
    FreeDictTranslator,
    dictd_key,
    dictd_number,
    first_translation,
)
from noiseforge.relevance.translate.freedict import _entry_penalty as _entry_penalty
from noiseforge.relevance.translate.freedict import _headwords as _headwords
from noiseforge.relevance.translate.freedict import _join as _join
from noiseforge.relevance.translate.hf import HFTranslator

#: names that live in :mod:`noiseforge.relevance.augment`, loaded by :func:`__getattr__`
_AUGMENT_NAMES = (
    "augment_translations",
    "untranslatable_pairs",
    "_augmentable",
    "_has_words",
    "_norm",
)

__all__ = [
    "FREEDICT_RULES",
    "ISO3",
    "LANGUAGE_NAMES",
    "ApertiumTranslator",
    "CachedTranslator",
    "DictdDictionary",
    "FreeDictTranslator",
    "HFTranslator",
    "TranslationCache",
    "TranslationUnavailable",
    "Translator",
    "augment_translations",
    "auto_translator",
    "available_translators",
    "dictd_key",
    "dictd_number",
    "first_translation",
    "install_hint",
    "to_iso2",
    "untranslatable_pairs",
]


def __getattr__(name: str) -> Any:
    """The augmentation names, imported from :mod:`noiseforge.relevance.augment` on first use.

    Raises
    ------
    AttributeError
        For any other name this module does not define.
    """
    if name in _AUGMENT_NAMES:
        value = getattr(importlib.import_module("noiseforge.relevance.augment"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily loaded augmentation names included."""
    return sorted(set(globals()) | set(_AUGMENT_NAMES))
