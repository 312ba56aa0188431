"""Writing result files: atomically (a temporary file in the same folder, then a
rename, so a reader never sees half a file and a failure leaves the old one), and
figures through matplotlib when it is installed."""

from __future__ import annotations

import errno
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: Path,
    write: Callable[[IO[bytes]], Any],
    *,
    overwrite: bool = True,
    mode: int | None = None,
) -> Path:
    """Call ``write(fh)`` on a binary temporary file beside ``path``, then rename it
    to ``path``; on any failure the temporary file is removed and ``path`` untouched.

    ``mode``: the permission bits of the new file, less the process umask, as
    ``open()`` would give them (``0o666``: what a plain ``open(path, "wb")`` makes);
    None (the default) leaves it readable and writable by its owner only (``0o600``).

    ``overwrite=False`` creates ``path`` exclusively: if it exists when the finished file
    is put in place (even one created by someone else while ``write`` ran) this raises
    :class:`FileExistsError` and leaves that file as it is. The finished file is hard-linked
    to ``path`` (``os.link`` fails on an existing name, so readers still never see half a
    file); where the file system has no hard links, ``path`` is first claimed with an
    ``O_CREAT | O_EXCL`` open and then replaced by the finished file."""
    path = Path(path)
    fd, tmp = _temporary_file(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        if overwrite:
            os.replace(tmp, path)
        else:
            _create_exclusively(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _temporary_file(path: Path, mode: int | None) -> tuple[int, str]:
    """A new hidden file beside ``path``, open for writing: (descriptor, name)."""
    if mode is None:
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    for _ in range(100):  # a random name is taken only by a stray file of an earlier run
        tmp = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(
        errno.EEXIST, "no free temporary file name beside the file", str(path.parent)
    )


def _create_exclusively(tmp: str, path: Path) -> None:
    """Put the finished file ``tmp`` at ``path``, which must not exist (FileExistsError)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network or FUSE file systems)
        claim = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError
        try:
            mine = os.fstat(claim)
        finally:
            os.close(claim)
        try:
            os.replace(tmp, path)
        except BaseException:
            try:  # give the name back, unless someone has replaced our empty claim
                now = os.stat(path)
                if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                    os.unlink(path)
            except OSError:
                pass
            raise
        return
    try:
        os.unlink(tmp)
    except OSError:
        pass  # the data is in place under path; a stray hidden .tmp is all that is left


def atomic_write_text(path: Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path``, atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or None when matplotlib is
    not installed (``pip install matplotlib``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format=Path(path).suffix.lstrip(".")))
    finally:
        plt.close(fig)
    return Path(path)
