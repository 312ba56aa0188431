"""Translation augmentation: new rows in missing languages from translated queries.

:func:`augment_translations` translates the queries of labelled original rows into target
languages with any :class:`~noiseforge.relevance.translate.Translator` (or the best
installed backend for each pair, ``"auto"``); :func:`untranslatable_pairs` lists, before
any work, the pairs it would need and no backend can translate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from noiseforge.relevance.schema import COLUMNS
from noiseforge.relevance.translate import TranslationUnavailable, Translator, auto_translator


def _augmentable(
    df: pd.DataFrame, target_languages: Sequence[str], source_languages: Sequence[str] | None
) -> pd.DataFrame:
    """The rows :func:`augment_translations` may translate: labelled originals in a source
    language (default: every language of ``df`` not among the targets)."""
    if source_languages is None:
        source_languages = sorted(set(df["language"]) - set(target_languages))
    return df[
        (df["strategy"] == "original")
        & df["label"].isin([0, 1])
        & df["language"].isin(source_languages)
    ]


def untranslatable_pairs(
    df: pd.DataFrame,
    target_languages: Sequence[str],
    translator: Translator | str = "auto",
    source_languages: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """The (src, tgt) pairs that :func:`augment_translations` would need and no installed
    backend can translate, checked before any work (``per_language`` sampling aside, every
    source language with rows to translate counts)."""
    base = _augmentable(df, list(target_languages), source_languages)
    missing = []
    for tgt in target_languages:
        for src in sorted(set(base["language"]) - {tgt}):
            if isinstance(translator, str):
                try:
                    auto_translator(src, tgt, cache=False)
                except TranslationUnavailable:
                    missing.append((src, tgt))
            elif translator.supports(src, tgt):
                missing.append((src, tgt))
    return missing


def _has_words(text: str) -> bool:
    """True if the text has a word that a translator could change (2+ letters, not a code like 'a52')."""
    return any(
        sum(c.isalpha() for c in w) >= 2 and not any(c.isdigit() for c in w) for w in text.split()
    )


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def augment_translations(
    df: pd.DataFrame,
    target_languages: Sequence[str],
    translator: Translator | str = "auto",
    source_languages: Sequence[str] | None = None,
    per_language: int | None = None,
    seed: int = 0,
    progress: bool = True,
    batch_size: int = 512,
) -> tuple[pd.DataFrame, dict]:
    """Synthesize rows in ``target_languages`` by translating the queries of labelled rows.

    Each new row copies task, target and label of an original row (``strategy ==
    "original"``, label 0/1, language in ``source_languages``; default every language of
    ``df`` not in ``target_languages``), with ``query`` translated, ``language`` = target,
    ``id = f"{source_id}:translation:{lang}"``, ``strategy = "translation"`` and the
    translator's name. ``per_language`` samples that many source rows per target language
    (seeded). Dropped and counted in the report: pairs no backend supports, translations
    equal to the source text when the source has translatable words, and rows whose
    (task, language, query, target) already exists in ``df`` or among the new rows.

    Returns ``(new_rows, report)``; report[lang] has candidates, translated, unchanged_dropped,
    unchanged_kept, duplicates_dropped, added, unsupported (list of src languages) and by_translator.
    """
    from noiseforge._progress import progress_bar

    target_languages = list(target_languages)
    base = _augmentable(df, target_languages, source_languages)
    seen = {
        (t, lang, _norm(q), tg)
        for t, lang, q, tg in zip(
            df["task"], df["language"], df["query"], df["target"], strict=True
        )
    }
    rng = np.random.default_rng(seed)
    new_parts, report = [], {}
    for tgt in target_languages:
        rep = {"candidates": 0, "translated": 0, "unchanged_dropped": 0, "unchanged_kept": 0,
               "duplicates_dropped": 0, "added": 0, "unsupported": [], "by_translator": {}}  # fmt: skip
        report[tgt] = rep
        rows = base[base["language"] != tgt]
        if per_language is not None and len(rows) > per_language:
            rows = rows.iloc[np.sort(rng.choice(len(rows), per_language, replace=False))]
        rep["candidates"] = len(rows)
        for src, group in rows.groupby("language", sort=True):
            if isinstance(translator, str):
                try:
                    tr = auto_translator(src, tgt)
                except TranslationUnavailable:
                    rep["unsupported"].append(src)
                    continue
            else:
                tr = translator
                if tr.supports(src, tgt):
                    rep["unsupported"].append(src)
                    continue
            queries = list(dict.fromkeys(group["query"]))
            done: dict[str, str] = {}
            bar = progress_bar(
                total=len(queries),
                desc=f"translating {src}->{tgt} ({tr.name})",
                enabled=progress and len(queries) >= 2000,
                unit="queries",
            )
            for i in range(0, len(queries), batch_size):
                chunk = queries[i : i + batch_size]
                done.update(zip(chunk, tr.translate(chunk, src, tgt), strict=True))
                bar.update(len(chunk))
            bar.close()
            keep = []
            for rid, task, q, target, label in zip(
                group["id"],
                group["task"],
                group["query"],
                group["target"],
                group["label"],
                strict=True,
            ):
                t = " ".join(done[q].split())
                rep["translated"] += 1
                if not t or _norm(t) == _norm(q):
                    if not t or _has_words(q):
                        rep["unchanged_dropped"] += 1
                        continue
                    rep["unchanged_kept"] += 1
                key = (task, tgt, _norm(t), target)
                if key in seen:
                    rep["duplicates_dropped"] += 1
                    continue
                seen.add(key)
                keep.append(
                    (
                        f"{rid}:translation:{tgt}",
                        task,
                        tgt,
                        t,
                        target,
                        int(label),
                        rid,
                        "translation",
                        tr.name,
                        np.nan,
                    )
                )
            rep["added"] += len(keep)
            rep["by_translator"][tr.name] = rep["by_translator"].get(tr.name, 0) + len(keep)
            new_parts.extend(keep)
    out = (
        pd.DataFrame(new_parts, columns=list(COLUMNS))
        .astype(
            {
                c: str
                for c in (
                    "id",
                    "task",
                    "language",
                    "query",
                    "target",
                    "source_id",
                    "strategy",
                    "translator",
                )
            }
        )
        .astype({"label": np.int64, "score": np.float64})
    )
    return out, report
