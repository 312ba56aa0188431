"""The wire format of the cloud protocol: one float32 C-order ``.npy`` array, read strictly.

:func:`decode_npy` never trusts the header: the magic, version, dtype
(little-endian float32 only), order, rank and every dimension are checked, and
the body must hold exactly the bytes the shape promises -- so a hostile or
broken header is a ValueError, never a huge allocation, a pickle or a hang.
"""

from __future__ import annotations

import io

import numpy as np

from noiseforge._common.validation import is_int

MAGIC = b"\x93NUMPY"
_FLOAT32 = np.dtype("<f4")
HEADER_LIMIT = 12 + 10_000  # magic, version, length field and numpy's largest header


def encode_npy(array: np.ndarray) -> bytes:
    """``array`` as a version-1 ``.npy`` body (float32, C order, no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=_FLOAT32), allow_pickle=False)
    return buf.getvalue()


def decode_npy(
    body: bytes | bytearray | memoryview, *, ndim: int | None = 2, copy: bool = True
) -> np.ndarray:
    """The float32 array of rank ``ndim`` (``None``: rank >= 2) in ``body``;
    ValueError naming what is wrong. ``copy=False`` returns a view of ``body``
    (writable when ``body`` is a bytearray): no second copy of a large body."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ValueError(f"expected bytes, got {type(body).__name__}")
    if isinstance(body, memoryview):
        body = body.cast("B") if body.contiguous else body.tobytes()
    if len(body) < 10 or bytes(body[:6]) != MAGIC:
        raise ValueError("the body is not a .npy array (no NUMPY magic)")
    major = body[6]
    # numpy refuses headers over 10,000 bytes: parse a bounded prefix, not a copy of it all
    fp = io.BytesIO(bytes(body[:HEADER_LIMIT]))
    fp.seek(8)
    try:
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unknown .npy version {major}")
    except Exception as exc:  # numpy's header parser raises many kinds on hostile input
        raise ValueError(f"malformed .npy header ({type(exc).__name__}: {exc})") from None
    if dtype != _FLOAT32:
        raise ValueError(f"expected little-endian float32 values, got dtype {dtype}")
    if fortran:
        raise ValueError("expected a C-order array, got Fortran order")
    rank_ok = len(shape) >= 2 if ndim is None else len(shape) == ndim
    if not rank_ok or not all(is_int(n) and n >= 0 for n in shape):
        want = "rows of at least one feature axis" if ndim is None else f"a rank-{ndim} array"
        raise ValueError(f"expected {want}, got shape {shape}")
    payload = len(body) - fp.tell()
    expected = 4
    for n in shape:
        expected *= n
    if payload != expected:
        raise ValueError(
            f"the header promises shape {shape} ({expected} bytes) but the body holds "
            f"{payload} bytes"
        )
    array = np.frombuffer(body, dtype=_FLOAT32, offset=fp.tell()).reshape(shape)
    return array.copy() if copy else array
