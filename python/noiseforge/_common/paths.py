"""Where noiseforge keeps what it can rebuild: trained models, embeddings, translations."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NOISEFORGE_CACHE"


def default_cache_dir() -> Path:
    """``$NOISEFORGE_CACHE``, or ``~/.cache/noiseforge``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "noiseforge"))


def cache_dir(sub: str | None = None, override: str | os.PathLike | None = None) -> Path:
    """``override`` when given, else ``default_cache_dir() / sub`` (``sub`` None: the root)."""
    if override is not None:
        return Path(override)
    root = default_cache_dir()
    return root / sub if sub else root
