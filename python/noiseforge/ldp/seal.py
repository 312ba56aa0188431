"""Seals: proof, checked just before sending, that bytes are the bytes noiseforge released.

When noiseforge creates released data (a layer-1 release, or post-processing
of released data) it seals the tensor: the rows are cut into chunks of about
256 KiB, each chunk's data and record ids are hashed (SHA-256), and each pair
of hashes is authenticated with HMAC-SHA-256 under a key that this process
draws at import and never stores or sends. Verification copies the rows to a
fresh buffer first, then recomputes the chunks' HMACs on the copy and
compares: what is verified is exactly what is then sent, even if another
thread edits the original meanwhile.

What this protects against: mistakes and careless code in the user's own
process -- an in-place edit of released data (``batch.data.copy_(raw)``, a
write through a NumPy view), a batch rebuilt with other data, a forged or
copied object. What it does not: code that deliberately reads this module's
key or calls its private functions, or another process that owns the memory.
Seals do not travel: a NoisedBatch is valid in the process that made it.

Every seal also has a public ``digest`` (SHA-256 over the chunk hashes, no
key): the same data gives the same digest in every process. The ledger binds
each charged batch to it, and checkpoints of cloud answers are bound to the
digest of their query set.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

CHUNK_BYTES = 1 << 18
_KEY = secrets.token_bytes(32)  # this process's; never stored, never sent
_PARALLEL_BYTES = 8 << 20  # below this, hashing on one thread is faster than a pool
_WORKERS = max(1, min(8, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None


class ReleaseIntegrityError(ValueError):
    """Data about to leave the client is not the data noiseforge released."""


_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="noiseforge-seal")
        return _pool


def _after_fork_in_child() -> None:
    # The parent's pool threads do not exist in a forked child: a pool inherited
    # from it would never run a task. The child starts its own when it needs one.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _host_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw 16-bit patterns
        t = t.view(torch.int16)
    return memoryview(t.numpy()).cast("B") if t.numel() else memoryview(b"")


def _chunk_hashes(data: torch.Tensor, records: torch.Tensor, rows: int) -> list[bytes]:
    """SHA-256 of (data rows, record ids) for every chunk of ``rows`` rows."""
    n = data.shape[0]
    raw, ids = _host_bytes(data), _host_bytes(records)
    row_bytes = raw.nbytes // n if n else 0
    spans = [(s, min(n, s + rows)) for s in range(0, n, rows)]

    def one(span: tuple[int, int]) -> bytes:
        s, e = span
        h = hashlib.sha256(raw[s * row_bytes : e * row_bytes])
        h.update(ids[s * 8 : e * 8])
        return h.digest()

    if raw.nbytes < _PARALLEL_BYTES or len(spans) < 2:
        return [one(s) for s in spans]
    # hashlib releases the GIL: one task per worker, each a contiguous run of chunks
    # (a task per chunk spent as long in the pool as in SHA-256)
    workers = _WORKERS
    step = -(-len(spans) // workers)
    runs = [spans[i : i + step] for i in range(0, len(spans), step)]
    return [h for run in _threads().map(lambda r: [one(s) for s in r], runs) for h in run]


class Seal:
    """The sealed rows of one tensor: ``data`` (N, ...) and ``records`` (N,) int64.

    Created only by :func:`seal` (noiseforge's release and post-processing code).
    """

    __slots__ = ("_hashes", "_header", "_macs", "chunk_rows", "data", "digest", "records")

    def rows(self) -> int:
        return self.data.shape[0]

    def _mac(self, index: int, chunk_hash: bytes) -> bytes:
        return hmac.new(
            _KEY, self._header + index.to_bytes(8, "little") + chunk_hash, hashlib.sha256
        ).digest()

    def verified_copy(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh copy of rows ``start:stop`` (data, records), checked against the seal.

        Raises ReleaseIntegrityError when the rows (or their record ids) changed
        since they were sealed.
        """
        if start >= stop:
            return self.data[start:stop].clone(), self.records[start:stop].clone()
        first = start // self.chunk_rows
        last = (stop - 1) // self.chunk_rows
        lo, hi = first * self.chunk_rows, min(self.rows(), (last + 1) * self.chunk_rows)
        data = self.data[lo:hi].clone()
        records = self.records[lo:hi].clone()
        got = _chunk_hashes(data, records, self.chunk_rows)
        for i, h in enumerate(got):
            if not hmac.compare_digest(self._mac(first + i, h), self._macs[first + i]):
                r0 = (first + i) * self.chunk_rows
                raise ReleaseIntegrityError(
                    f"rows {r0}..{min(self.rows(), r0 + self.chunk_rows) - 1} of this "
                    "NoisedBatch changed after noiseforge released them (an in-place edit of "
                    ".data or .records, or a forged object); refusing to send them. Released "
                    "data is read-only: compute new rows with noiseforge.ldp.postprocess(), "
                    "and release private data only through noiseforge.ldp.release()"
                )
        return data[start - lo : stop - lo], records[start - lo : stop - lo]

    def range_digest(self, start: int, stop: int) -> str:
        """Public digest of rows ``start:stop`` as sealed (the whole tensor: ``digest``)."""
        if start == 0 and stop == self.rows():
            return self.digest
        h = hashlib.sha256(b"noiseforge/sealed-range/v1\0" + self._header)
        h.update(f"{start}:{stop}\0".encode())
        first, last = start // self.chunk_rows, max(start, stop - 1) // self.chunk_rows
        for c in self._hashes[first : last + 1]:
            h.update(c)
        return h.hexdigest()


def seal(data: torch.Tensor, records: torch.Tensor, context: str) -> Seal:
    """Seal ``data`` (N, ...) and its ``records`` (N,) int64; ``context`` (the release
    id and batch) is bound into every MAC and the digest."""
    s = Seal.__new__(Seal)
    s.data = data.detach()
    s.records = records.detach().to(torch.int64)
    row_bytes = max(1, s.data[0:1].numel() * s.data.element_size()) if len(s.data) else 1
    s.chunk_rows = max(1, CHUNK_BYTES // row_bytes)
    s._header = f"noiseforge/seal/v1\0{s.data.dtype}\0{tuple(s.data.shape)}\0{context}\0".encode()
    s._hashes = _chunk_hashes(s.data, s.records, s.chunk_rows)
    s._macs = [s._mac(i, h) for i, h in enumerate(s._hashes)]
    s.digest = hashlib.sha256(s._header + b"".join(s._hashes)).hexdigest()
    return s
