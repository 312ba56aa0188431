"""Injected faults for the tests of atomic writes."""

from __future__ import annotations

import errno


class DiskFull:
    """A file that takes the first 10 bytes of a write, then fails like a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data) -> int:
        self._fh.write(bytes(data)[:10])
        self._fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()
