"""Translation augmentation on Ray: distinct queries -> an actor pool of translators -> the join.

:func:`augment_translations_ray` is
:func:`noiseforge.relevance.augment.augment_translations` with its translate step on
a Ray Data actor pool. The three steps:

1. **plan** (driver): :func:`~noiseforge.relevance.augment.plan_translations`, the
   local engine's own sample (``per_language``, ``seed``) and translator choice per
   (source, target) pair.
2. **translate** (actors): the distinct (src, tgt, query) triples of every pair
   (:func:`translation_requests`) become a Ray Dataset; ``map_batches`` sends its
   blocks to a pool of ``workers`` :class:`TranslatorActor` (each
   :data:`~noiseforge.distributed.runtime.ACTOR_CPUS`). An actor builds its
   translators once: the user's translator (it travels as its pickle), or, for
   ``"auto"``, ``auto_translator(src, tgt)`` per pair, kept for the actor's life. A
   query repeated in many rows is translated once per pair. The translations come back
   as the dataset's rows: that dataset, not a translator's disk cache on some node, is
   the result (a backend's own cache may still save work on a node).
3. **join** (driver): :func:`~noiseforge.relevance.augment.join_translations` over the
   plan, in the local engine's order (target languages as given, source languages
   sorted), so that its first-wins de-duplication keeps the rows the local engine keeps.

The requests are cut into the local engine's translate calls: the distinct queries of
a pair in chunks of ``batch_size``, first occurrence first, and a block holds whole
chunks only; the actor makes one ``translate`` call per chunk. So each call sees the
texts the local engine's call sees, and the new rows and the report equal the local
engine's -- even for a translator whose output for a text depends on the rest of its
batch (a Hugging Face model with padding). With ``"auto"`` every node must have the
backends the driver has: an actor whose best backend for a pair differs (another
name or version, e.g. other dictionaries installed) fails the job and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from noiseforge._common.validation import check_int
from noiseforge.distributed.ldpkit import _data_context, _frees_actors, _pool
from noiseforge.distributed.runtime import ACTOR_CPUS, configure_threads, connect, require_ray
from noiseforge.relevance.augment import (
    TargetPlan,
    join_translations,
    plan_translations,
    translate_in_batches,
)
from noiseforge.relevance.translate import Translator, auto_translator

__all__ = [
    "TranslatorActor",
    "augment_translations_ray",
    "backend_key",
    "translation_requests",
]

#: the columns of a translation request; an actor's output has ``translation`` in place
#: of ``chunk`` and ``backend``
REQUEST_COLUMNS = ("src", "tgt", "query", "chunk", "backend")


def backend_key(translator: Translator) -> str:
    """``name@version``: what must be equal on the driver and in an actor for an
    ``"auto"`` translation to be the one the driver planned."""
    return f"{translator.name}@{translator.version}"


def translation_requests(
    plans: Sequence[TargetPlan], *, batch_size: int = 512, auto: bool = True
) -> pd.DataFrame:
    """The distinct (src, tgt, query) triples the plans need translated, one row each.

    Columns: ``src``, ``tgt``, ``query``; ``chunk``, the local engine's translate call
    the query is part of (its position among the pair's distinct queries, first
    occurrence first, floor-divided by ``batch_size``); ``backend``, the planned
    translator's :func:`backend_key` when ``auto`` (the actor checks it), else ``""``.
    Pairs in plan order; a pair planned twice (a target language given twice) is asked
    once, for the union of its queries.
    """
    queries: dict[tuple[str, str], dict[str, None]] = {}
    backends: dict[tuple[str, str], str] = {}
    for plan in plans:
        for job in plan.jobs:
            pair = (job.src, job.tgt)
            queries.setdefault(pair, {}).update(dict.fromkeys(job.queries))
            backends[pair] = backend_key(job.translator) if auto else ""
    cols: dict[str, list[Any]] = {c: [] for c in REQUEST_COLUMNS}
    for (src, tgt), texts in queries.items():
        n = len(texts)
        cols["src"] += [src] * n
        cols["tgt"] += [tgt] * n
        cols["query"] += list(texts)
        cols["chunk"] += [i // batch_size for i in range(n)]
        cols["backend"] += [backends[(src, tgt)]] * n
    return pd.DataFrame(cols).astype({"chunk": np.int64})


def _request_blocks(requests: pd.DataFrame, block_rows: int) -> list[pd.DataFrame]:
    """The requests in blocks of whole chunks of one pair: a block closes once it has
    ``block_rows`` rows or more (a chunk is never cut)."""
    blocks = []
    for _, pair in requests.groupby(["src", "tgt"], sort=False):
        start = 0
        chunks = pair["chunk"].to_numpy()
        bounds = np.flatnonzero(np.diff(chunks)) + 1  # where each chunk after the first starts
        for end in [*bounds.tolist(), len(pair)]:
            if end - start >= block_rows or end == len(pair):
                blocks.append(pair.iloc[start:end].reset_index(drop=True))
                start = end
    return blocks


class TranslatorActor:
    """One translator actor of the pool (the UDF of the translate stage).

    ``translator``: the user's translator, or None for ``"auto"`` (the actor then builds
    ``auto_translator(src, tgt)`` once per pair and checks it is the backend the driver
    planned). Each call translates a batch of requests, one ``translate`` call per
    (src, tgt, chunk), and returns their ``src``, ``tgt``, ``query`` and
    ``translation``.

    Raises
    ------
    TranslationUnavailable
        This node has no backend for a pair (``"auto"``), or the translator refuses it.
    RuntimeError
        This node's best backend for a pair is not the one the driver planned.
    """

    def __init__(self, translator: Translator | None = None) -> None:
        self.translator = translator
        self._auto: dict[tuple[str, str], Translator] = {}

    def _translator(self, src: str, tgt: str, planned: str) -> Translator:
        if self.translator is not None:
            return self.translator
        tr = self._auto.get((src, tgt))
        if tr is None:
            tr = auto_translator(src, tgt)
            if backend_key(tr) != planned:
                raise RuntimeError(
                    f"{src}->{tgt}: this Ray worker's best translator is {backend_key(tr)}, "
                    f"the driver planned {planned}: install the same translation packages "
                    "on every node, or pass one translator instead of 'auto'"
                )
            self._auto[(src, tgt)] = tr
        return tr

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        configure_threads()  # a reused worker must not keep an earlier task's threads
        src, tgt, query = (np.asarray(batch[c], dtype=object) for c in ("src", "tgt", "query"))
        chunk, backend = np.asarray(batch["chunk"]), np.asarray(batch["backend"], dtype=object)
        out = np.empty(len(query), dtype=object)
        calls: dict[tuple[str, str, int], list[int]] = {}
        for i, key in enumerate(zip(src, tgt, chunk.tolist(), strict=True)):
            calls.setdefault(key, []).append(i)
        for (s, t, _), rows in calls.items():
            tr = self._translator(s, t, backend[rows[0]])
            texts = [str(q) for q in query[rows]]
            out[rows] = translate_in_batches(tr, texts, s, t, batch_size=len(texts), progress=False)
        return {"src": src, "tgt": tgt, "query": query, "translation": out}


def _checked_translator(translator: Translator | str) -> Translator | None:
    """The translator to ship to the actors (None for ``"auto"``)."""
    if isinstance(translator, str):
        if translator != "auto":
            raise ValueError(
                f"translator {translator!r}: pass 'auto' or a Translator (e.g. "
                f"noiseforge.relevance.pipeline.make_translator({translator!r}))"
            )
        return None
    if not isinstance(translator, Translator):
        raise TypeError(
            f"translator must be 'auto' or a noiseforge Translator, got {type(translator).__name__}"
        )
    from ray import cloudpickle

    try:
        cloudpickle.dumps(translator)
    except Exception as exc:
        raise TypeError(
            f"the ray engine sends the translator to its workers as a pickle, and "
            f"{translator!r} does not pickle ({type(exc).__name__}: {exc}): keep paths, "
            "not open files, sockets or locks, in its state, or pass 'auto'"
        ) from None
    return translator


@_frees_actors
def augment_translations_ray(
    df: pd.DataFrame,
    target_languages: Sequence[str],
    translator: Translator | str = "auto",
    *,
    source_languages: Sequence[str] | None = None,
    per_language: int | None = None,
    seed: int = 0,
    progress: bool = True,
    batch_size: int = 512,
    workers: int = 2,
    block_rows: int | None = None,
    address: str | None = None,
) -> tuple[pd.DataFrame, dict]:
    """:func:`~noiseforge.relevance.augment.augment_translations` on Ray (same arguments,
    same ``(new_rows, report)``).

    ``workers``: translator actors in the pool (no more than there are blocks);
    ``block_rows``: requests per Ray block (default ``batch_size``; rounded up to whole
    chunks of ``batch_size`` queries of one pair); ``address``: the Ray cluster
    (:func:`noiseforge.distributed.connect`). ``progress`` turns Ray Data's progress
    bars on or off.

    Raises
    ------
    ValueError
        ``translator`` is a string other than ``"auto"``; ``workers``, ``batch_size`` or
        ``block_rows`` is not an int >= 1.
    TypeError
        ``translator`` is not a Translator, or does not pickle.
    TranslationUnavailable, RuntimeError
        From an actor, as the original error (see :class:`TranslatorActor`).
    """
    shipped = _checked_translator(translator)
    batch_size = check_int("batch_size", batch_size, 1)
    block_rows = check_int("block_rows", batch_size if block_rows is None else block_rows, 1)
    workers = check_int("workers", workers, 1)
    connect(address)
    ray = require_ray()
    _data_context(progress)
    plans = plan_translations(
        df, target_languages, translator, source_languages, per_language, seed
    )
    requests = translation_requests(plans, batch_size=batch_size, auto=shipped is None)
    done: dict[tuple[str, str], dict[str, str]] = {}
    if len(requests):
        blocks = _request_blocks(requests, block_rows)
        ds = ray.data.from_pandas(blocks).map_batches(
            TranslatorActor,
            batch_size=None,
            batch_format="numpy",
            fn_constructor_kwargs={"translator": shipped},
            compute=_pool(workers, len(blocks)),
            num_cpus=ACTOR_CPUS,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for s, t, q, tr in zip(
                batch["src"], batch["tgt"], batch["query"], batch["translation"], strict=True
            ):
                done.setdefault((str(s), str(t)), {})[str(q)] = str(tr)
        got = sum(len(d) for d in done.values())
        if got != len(requests):
            raise RuntimeError(
                f"the translate stage returned {got} distinct translations for "
                f"{len(requests)} requests: a block was lost or repeated; rerun the job"
            )

    def joined(tr: Translator, queries: list[str], src: str, tgt: str) -> list[str]:
        pair = done[(src, tgt)]
        return [pair[q] for q in queries]

    return join_translations(df, plans, joined)
