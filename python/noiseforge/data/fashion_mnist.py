"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) from local IDX files.

The Debian package ``dataset-fashion-mnist`` installs the full 60k/10k set in
``/usr/share/datasets/fashion-mnist``; ``$NOISEFORGE_FASHION_MNIST`` or
``root=`` points elsewhere. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
ENV_ROOT = "NOISEFORGE_FASHION_MNIST"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set is not installed where noiseforge looks for it."""


def _open(path: Path):
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gzip.open(gz, "rb")
    if path.exists():
        return open(path, "rb")
    raise DatasetNotFoundError(
        f"Fashion-MNIST file {gz} (or {path}) not found. Install it with "
        f"'apt-get install dataset-fashion-mnist', or set ${ENV_ROOT} to a folder with the IDX files."
    )


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    with _open(path) as f:
        header = f.read(4 + 4 * ndim)
        if len(header) < 4 + 4 * ndim or struct.unpack(">I", header[:4])[0] != magic:
            raise ValueError(f"{path}: not an IDX file with magic {magic}")
        dims = struct.unpack(f">{ndim}I", header[4:])
        data = np.frombuffer(f.read(), dtype=np.uint8).copy()  # writable, owned
    if data.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: expected {int(np.prod(dims))} values, found {data.size} (truncated?)"
        )
    return data.reshape(dims)


def load_fashion_mnist(
    split: str = "test", root: str | os.PathLike | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of ``split`` ("train" or "test").

    ``limit`` keeps the first ``limit`` examples. Raises DatasetNotFoundError with
    the install command when the files are missing.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = Path(root or os.environ.get(ENV_ROOT) or DEFAULT_ROOT)
    img_name, lbl_name = _FILES[split]
    images = _read_idx(base / img_name, 2051, 3)
    labels = _read_idx(base / lbl_name, 2049, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{base}: {len(images)} images but {len(labels)} labels")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
