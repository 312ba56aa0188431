"""Injected faults: a disk that fills up mid-write, a Ray address where no cluster answers."""

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


def run_against_no_ray_cluster(argv: list[str]):
    """Run ``noiseforge *argv --engine ray --ray-address 127.0.0.1:9`` (nothing listens on
    port 9) and check it stops with exit status 1 and the one line that says how to start
    a cluster; returns the finished process."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "noiseforge", *argv, "--engine", "ray"]
    cmd += ["--ray-address", "127.0.0.1:9"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no Ray cluster answers at 127.0.0.1:9" in lines[0]
    assert "ray start --head --num-cpus=N" in lines[0] and "--engine local" in lines[0]
    return done
