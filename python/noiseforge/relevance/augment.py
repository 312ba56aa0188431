"""Translation augmentation: new rows in missing languages from translated queries.

:func:`augment_translations` translates the queries of labelled original rows into target
languages with any :class:`~noiseforge.relevance.translate.Translator` (or the best
installed backend for each pair, ``"auto"``); :func:`untranslatable_pairs` lists, before
any work, the pairs it would need and no backend can translate.

The work is three steps, so that another engine can replace the middle one (the Ray
engine, :mod:`noiseforge.distributed.augment`, translates on an actor pool):
:func:`plan_translations` (the sampled rows of each target language and the translator
of each (source, target) pair), a translate step ``(translator, queries, src, tgt) ->
translations`` (locally :func:`translate_in_batches`) and :func:`join_translations`
(normalisation, dropping unchanged translations, de-duplication, the new rows and the
report).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PairJob:
    """The rows of one (source, target) language pair to translate, and who translates them.

    ``rows`` are the sampled source rows in language ``src`` (the original table's order);
    ``queries`` are their distinct queries, first occurrence first: the texts a
    translate step is asked for, in this order.
    """

    src: str
    tgt: str
    translator: Translator
    rows: pd.DataFrame

    @property
    def queries(self) -> list[str]:
        """The distinct queries of ``rows``, in the order they first occur."""
        return list(dict.fromkeys(self.rows["query"]))


@dataclass(frozen=True)
class TargetPlan:
    """What :func:`augment_translations` does for one target language: how many source
    rows it considers (``candidates``, after ``per_language`` sampling), the source
    languages no translator supports (sorted), and one :class:`PairJob` per supported
    source language (sorted by source language: the order the join de-duplicates in)."""

    tgt: str
    candidates: int
    unsupported: list[str]
    jobs: list[PairJob]


#: ``translate(translator, queries, src, tgt) -> translations``: one per query, in order
TranslateStep = Callable[[Translator, list[str], str, str], list[str]]


def plan_translations(
    df: pd.DataFrame,
    target_languages: Sequence[str],
    translator: Translator | str = "auto",
    source_languages: Sequence[str] | None = None,
    per_language: int | None = None,
    seed: int = 0,
) -> list[TargetPlan]:
    """The planning step of :func:`augment_translations`: per target language (in the
    order given) the sampled source rows, grouped by source language, with the translator
    of each pair (``auto_translator(src, tgt)`` for a string ``translator``) or the pair
    reported unsupported. Translates nothing; the ``per_language`` sample is drawn from
    one generator seeded by ``seed``, target language after target language."""
    target_languages = list(target_languages)
    base = _augmentable(df, target_languages, source_languages)
    rng = np.random.default_rng(seed)
    plans = []
    for tgt in target_languages:
        rows = base[base["language"] != tgt]
        if per_language is not None and len(rows) > per_language:
            rows = rows.iloc[np.sort(rng.choice(len(rows), per_language, replace=False))]
        unsupported, jobs = [], []
        for src, group in rows.groupby("language", sort=True):
            if isinstance(translator, str):
                try:
                    tr = auto_translator(src, tgt)
                except TranslationUnavailable:
                    unsupported.append(src)
                    continue
            else:
                tr = translator
                if tr.supports(src, tgt):
                    unsupported.append(src)
                    continue
            jobs.append(PairJob(src, tgt, tr, group))
        plans.append(TargetPlan(tgt, len(rows), unsupported, jobs))
    return plans


def translate_in_batches(
    translator: Translator,
    queries: list[str],
    src: str,
    tgt: str,
    *,
    batch_size: int = 512,
    progress: bool = True,
) -> list[str]:
    """The local translate step: ``translator.translate`` on chunks of ``batch_size``
    queries, in order, with a progress bar from 2000 queries (when ``progress``)."""
    from noiseforge._progress import progress_bar

    out: list[str] = []
    bar = progress_bar(
        total=len(queries),
        desc=f"translating {src}->{tgt} ({translator.name})",
        enabled=progress and len(queries) >= 2000,
        unit="queries",
    )
    for i in range(0, len(queries), batch_size):
        chunk = queries[i : i + batch_size]
        out.extend(translator.translate(chunk, src, tgt))
        bar.update(len(chunk))
    bar.close()
    return out


def join_translations(
    df: pd.DataFrame, plans: Sequence[TargetPlan], translate: TranslateStep
) -> tuple[pd.DataFrame, dict]:
    """The joining step of :func:`augment_translations`: each job's translations (from
    ``translate``, asked once per job, in plan order) become new rows, minus unchanged
    translations of texts with words and rows whose (task, language, normalised query,
    target) is already in ``df`` or among the rows made before it.

    The de-duplication keeps the first row of a key, so the result depends on the order
    of ``plans`` and their jobs; :func:`plan_translations` gives the local engine's order.

    Returns ``(new_rows, report)`` as :func:`augment_translations` does.

    Raises
    ------
    RuntimeError
        ``translate`` returned a different number of translations than queries.
    """
    seen = {
        (t, lang, _norm(q), tg)
        for t, lang, q, tg in zip(
            df["task"], df["language"], df["query"], df["target"], strict=True
        )
    }
    new_parts, report = [], {}
    for plan in plans:
        tgt = plan.tgt
        rep = {"candidates": plan.candidates, "translated": 0, "unchanged_dropped": 0,
               "unchanged_kept": 0, "duplicates_dropped": 0, "added": 0,
               "unsupported": list(plan.unsupported), "by_translator": {}}  # fmt: skip
        report[tgt] = rep
        for job in plan.jobs:
            tr, group, queries = job.translator, job.rows, job.queries
            translations = translate(tr, queries, job.src, tgt)
            if len(translations) != len(queries):
                raise RuntimeError(
                    f"the translate step returned {len(translations)} translations for "
                    f"{len(queries)} {job.src}->{tgt} queries: it must return one per query"
                )
            done = dict(zip(queries, translations, strict=True))
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

    Three steps, which other engines reuse: :func:`plan_translations` (the sample and the
    translator of each pair), a translate step (here :func:`translate_in_batches`, chunks
    of ``batch_size`` distinct queries per pair) and :func:`join_translations`.

    Returns ``(new_rows, report)``; report[lang] has candidates, translated, unchanged_dropped,
    unchanged_kept, duplicates_dropped, added, unsupported (list of src languages) and by_translator.
    """
    plans = plan_translations(
        df, target_languages, translator, source_languages, per_language, seed
    )
    step = functools.partial(translate_in_batches, batch_size=batch_size, progress=progress)
    return join_translations(df, plans, step)
