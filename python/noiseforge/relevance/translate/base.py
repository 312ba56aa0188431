"""Shared pieces of the translators: language tables, the error and the interface.

Language codes are the table's two-letter codes (en, fr, es, de, it, pl, ar, pt, ...);
:data:`ISO3` maps them to the ISO 639-3 codes that FreeDict and newer Apertium packages
use, :func:`to_iso2` maps back. A backend subclasses :class:`Translator`; one that cannot
translate a pair raises :class:`TranslationUnavailable` with what to install.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

#: two-letter (table) code -> ISO 639-3 (FreeDict, newer Apertium) code
ISO3 = {
    "en": "eng", "fr": "fra", "es": "spa", "de": "deu", "it": "ita", "pl": "pol", "ar": "ara",
    "pt": "por", "nl": "nld", "ru": "rus", "ja": "jpn", "ko": "kor", "th": "tha", "vn": "vie",
    "vi": "vie", "id": "ind", "tr": "tur", "sv": "swe", "ca": "cat", "gl": "glg", "ro": "ron",
    "cs": "ces", "da": "dan", "fi": "fin", "el": "ell", "bg": "bul", "hu": "hun", "nb": "nob",
}  # fmt: skip
_ISO2 = {v: k for k, v in ISO3.items() if k != "vi"}
LANGUAGE_NAMES = {
    "en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian",
    "pl": "Polish", "ar": "Arabic", "pt": "Portuguese", "ko": "Korean", "ja": "Japanese",
    "th": "Thai", "vn": "Vietnamese", "id": "Indonesian", "nl": "Dutch", "ru": "Russian",
}  # fmt: skip


def to_iso2(code: str) -> str:
    """'eng' -> 'en', 'es' -> 'es'; unknown codes are returned lower-cased."""
    code = code.lower()
    return _ISO2.get(code, code)


class TranslationUnavailable(RuntimeError):
    """No installed backend can translate a language pair; the message says what to install."""


class Translator(abc.ABC):
    """Translates batches of short texts between two-letter language codes.

    Subclasses set ``name`` and ``version`` (the cache key) and implement :meth:`pairs`
    and :meth:`_translate`. ``translate`` keeps the order and length of ``texts``.
    """

    name: str = "translator"
    version: str = "0"

    @abc.abstractmethod
    def pairs(self) -> set[tuple[str, str]]:
        """The (src, tgt) pairs this backend can translate (pivots included)."""

    def supports(self, src: str, tgt: str) -> list[str]:
        """Reasons this backend cannot translate src -> tgt (empty when it can)."""
        if (src, tgt) in self.pairs():
            return []
        return [f"{self.name}: no {src}->{tgt} pair installed"]

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        """Translate ``texts`` from ``src`` to ``tgt``; raises TranslationUnavailable if unsupported."""
        texts = list(texts)
        if not texts:
            return []
        if src == tgt:
            return texts
        reasons = self.supports(src, tgt)
        if reasons:
            raise TranslationUnavailable("; ".join(reasons))
        out = self._translate(texts, src, tgt)
        if len(out) != len(texts):
            raise RuntimeError(
                f"{self.name} returned {len(out)} translations for {len(texts)} texts"
            )
        return out

    @abc.abstractmethod
    def _translate(self, texts: list[str], src: str, tgt: str) -> list[str]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"
