"""Loaders of the offline data sets noiseforge runs on."""

from noiseforge.data.fashion_mnist import DatasetNotFoundError, load_fashion_mnist

__all__ = ["DatasetNotFoundError", "load_fashion_mnist"]
