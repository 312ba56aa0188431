"""Translations kept on disk: :class:`TranslationCache` (SQLite) and :class:`CachedTranslator`."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from noiseforge._common.paths import default_cache_dir
from noiseforge.relevance.translate.base import Translator


class TranslationCache:
    """Translations on disk in SQLite, keyed by (translator name@version, src, tgt, text).

    Each batch is one transaction, so concurrent processes and interrupted runs leave the
    cache consistent.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_dir() / "translations.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS translations (translator TEXT, src TEXT, tgt TEXT, "
                "text TEXT, translation TEXT, PRIMARY KEY (translator, src, tgt, text))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, translator: str, src: str, tgt: str, texts: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        uniq = list(dict.fromkeys(texts))
        with self._connect() as db:
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                q = ",".join("?" * len(chunk))
                for text, tr in db.execute(
                    f"SELECT text, translation FROM translations WHERE translator=? AND src=? AND tgt=? AND text IN ({q})",
                    [translator, src, tgt, *chunk],
                ):
                    found[text] = tr
        return found

    def put(self, translator: str, src: str, tgt: str, pairs: dict[str, str]) -> None:
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO translations VALUES (?, ?, ?, ?, ?)",
                [(translator, src, tgt, k, v) for k, v in pairs.items()],
            )


class CachedTranslator(Translator):
    """Wraps a translator: cached texts are read from disk, only misses are translated."""

    def __init__(self, inner: Translator, cache: TranslationCache | None = None):
        self.inner = inner
        self.cache = cache if cache is not None else TranslationCache()
        self.name, self.version = inner.name, inner.version
        self.hits = self.misses = 0

    def pairs(self) -> set[tuple[str, str]]:
        return self.inner.pairs()

    def supports(self, src: str, tgt: str) -> list[str]:
        return self.inner.supports(src, tgt)

    def _translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        key = f"{self.inner.name}@{self.inner.version}"
        found = self.cache.get(key, src, tgt, texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        self.hits += len(texts) - sum(1 for t in texts if t not in found)
        self.misses += len(missing)
        if missing:
            new = dict(zip(missing, self.inner.translate(missing, src, tgt), strict=True))
            self.cache.put(key, src, tgt, new)
            found.update(new)
        return [found[t] for t in texts]
