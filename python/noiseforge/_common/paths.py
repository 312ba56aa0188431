"""Where noiseforge keeps what it can rebuild: trained models, embeddings, translations."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NOISEFORGE_CACHE"


def default_cache_dir() -> Path:
    """``$NOISEFORGE_CACHE``, or ``~/.cache/noiseforge``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "noiseforge"))
