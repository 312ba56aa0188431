"""Which offline backend translates a pair on this machine, and what to install if none does.

:func:`available_translators` lists the installed backends, :func:`auto_translator` picks
one for a pair (Apertium first, then FreeDict), :func:`install_hint` names the Debian
packages that would cover the pairs no backend translates.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from noiseforge.relevance.translate.apertium import ApertiumTranslator
from noiseforge.relevance.translate.base import ISO3, TranslationUnavailable, Translator
from noiseforge.relevance.translate.cache import CachedTranslator
from noiseforge.relevance.translate.freedict import FreeDictTranslator


def available_translators() -> pd.DataFrame:
    """The offline backends on this machine: name, available, pairs (sorted), reason."""
    rows = []
    for cls, missing in (
        (ApertiumTranslator, "apt-get install apertium apertium-eng-spa ..."),
        (FreeDictTranslator, "apt-get install dict-freedict-eng-deu ..."),
    ):
        t = cls()
        pairs = sorted(t.pairs())
        rows.append((t.name, bool(pairs), pairs, "" if pairs else f"nothing installed: {missing}"))
    return pd.DataFrame(rows, columns=["name", "available", "pairs", "reason"])


_BACKENDS: dict[str, Translator] = {}


def auto_translator(src: str, tgt: str, *, cache: bool = True) -> Translator:
    """The best installed backend for src -> tgt: Apertium when it has the pair, else FreeDict.

    Raises TranslationUnavailable listing every backend's reason (and the apt packages to
    install) when none can translate the pair. ``cache=True`` wraps it in the disk cache.
    """
    reasons = []
    for cls in (ApertiumTranslator, FreeDictTranslator):
        t = _BACKENDS.get(cls.name) or _BACKENDS.setdefault(cls.name, cls())
        why = t.supports(src, tgt)
        if not why:
            return CachedTranslator(t) if cache else t
        reasons += why
    raise TranslationUnavailable(f"cannot translate {src}->{tgt}:\n  " + "\n  ".join(reasons))


def install_hint(
    pairs: Sequence[tuple[str, str]],
    translator: Translator | str = "auto",
    *,
    freedict: FreeDictTranslator | None = None,
) -> str:
    """One line: the Debian packages that would translate every (src, tgt) of ``pairs``.

    FreeDict pivots through English, so ``dict-freedict-<src>-eng`` for each source and
    ``dict-freedict-eng-<tgt>`` for each target cover every pair (dictionaries already
    installed in ``freedict``'s folder, default /usr/share/dictd, are left out); Apertium
    pair packages are named irregularly, so for ``translator="apertium"`` the hint names
    the search instead.
    """
    name = translator if isinstance(translator, str) else translator.name
    if name == "apertium":
        apertium = ApertiumTranslator()
        first = "" if apertium.binary else "apt-get install apertium, then "
        wanted = ", ".join(sorted({f"{s}-{t}" for s, t in pairs}))
        return (
            f"{first}install an Apertium pair for {wanted} (or pairs through Spanish or "
            "English): apt-cache search apertium"
        )
    freedict = freedict if freedict is not None else FreeDictTranslator()
    have = set(freedict._dicts)
    pivot = freedict.pivot
    legs = {(s, pivot) for s, _ in pairs if s != pivot} | {
        (pivot, t) for _, t in pairs if t != pivot
    }
    packages = sorted(f"dict-freedict-{ISO3.get(a, a)}-{ISO3.get(b, b)}" for a, b in legs - have)
    if not packages:  # every leg is there, yet a pair is not: name the direct dictionaries
        packages = sorted({f"dict-freedict-{ISO3.get(s, s)}-{ISO3.get(t, t)}" for s, t in pairs})
    hint = f"apt-get install {' '.join(packages)}"
    if name == "auto":
        hint += " (FreeDict through English; an Apertium pair works too: apt-cache search apertium)"
    return hint
