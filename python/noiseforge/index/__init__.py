"""Vector indexes for hard-negative mining."""

from noiseforge.index.hnsw import HNSWIndex, IndexFormatError

__all__ = ["HNSWIndex", "IndexFormatError"]
