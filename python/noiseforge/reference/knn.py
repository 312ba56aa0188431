"""Deprecated: renamed to :mod:`noiseforge.reference.knn_topk` (one name per op)."""

import warnings

from noiseforge.reference.knn_topk import knn_topk_reference

warnings.warn(
    "noiseforge.reference.knn is now noiseforge.reference.knn_topk; the old name will be removed",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["knn_topk_reference"]
