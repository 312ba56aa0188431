"""Fashion-MNIST's idx file format, written for generated test data."""

from __future__ import annotations

import gzip
import struct

import numpy as np


def write_idx(path, magic, array):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())
