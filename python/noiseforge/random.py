"""Philox4x32-10 streams: a 64-bit key and the next unused counter.

Privacy rests on two rules implemented here:

* the default stream's key is **secret**: drawn from the operating system
  (:func:`secrets.randbits`) and never exposed; in a child process created by
  ``fork`` every secret stream gets a fresh key, so parent and child never
  share noise;
* a stream is **never reused**: every op call reserves a fresh block of
  counters (one per output element) and advances the stream past it.

A user seed (``seed=123``) gives reproducible noise for experiments and tests.
Anyone who knows the seed can regenerate and subtract the noise, so a seeded
stream provides **no privacy**; use it only for reproducibility.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import weakref

import numpy as np

from noiseforge._common.validation import is_int

SEED_BITS = 63
MAX_COUNTER = 1 << 63  # counters are carried as int64 by the Triton kernel


def check_seed(seed: int) -> int:
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < (1 << SEED_BITS):
        raise ValueError(f"seed must be in [0, 2**{SEED_BITS}), got {seed}")
    return int(seed)


class PhiloxGenerator:
    """A Philox4x32-10 stream.

    Parameters
    ----------
    seed:
        ``None`` (default) draws a secret key from the OS; an int in
        ``[0, 2**63)`` gives a reproducible, **non-private** stream.

    Each call of an op reserves ``count`` consecutive counters with
    :meth:`reserve`; counter ``c`` yields the four words of
    ``Philox4x32-10(key=seed, counter=(c mod 2**32, c >> 32, 0, 0))``.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._secret = seed is None
        self._seed = secrets.randbits(SEED_BITS) if seed is None else check_seed(seed)
        self._offset = 0
        self._lock = threading.Lock()
        if self._secret:
            _secret_generators.add(self)  # re-keyed in a forked child

    @property
    def is_secret(self) -> bool:
        return self._secret

    @property
    def seed(self) -> int:
        """The key of a seeded stream; a secret stream refuses to reveal it."""
        if self._secret:
            raise PermissionError(
                "the key of a secret generator is not exposed: knowing it would let anyone "
                "remove the noise. Create PhiloxGenerator(seed=...) if you need a known key."
            )
        return self._seed

    @property
    def offset(self) -> int:
        """The first counter the next call will use."""
        return self._offset

    def reserve(self, count: int) -> tuple[int, int]:
        """Reserve ``count`` fresh counters; returns ``(key, first_counter)``."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        with self._lock:
            start = self._offset
            if start + count > MAX_COUNTER:
                raise OverflowError(
                    "this Philox stream is exhausted (2**63 counters used); create a new generator"
                )
            self._offset = start + count
        return self._seed, start

    def _reseed_after_fork(self) -> None:
        self._seed = secrets.randbits(SEED_BITS)
        self._offset = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        key = "secret" if self._secret else str(self._seed)
        return f"PhiloxGenerator(seed={key}, offset={self._offset})"


_default: PhiloxGenerator | None = None
_secret_generators: weakref.WeakSet[PhiloxGenerator] = weakref.WeakSet()
_seeded: dict[int, PhiloxGenerator] = {}
_lock = threading.Lock()


def default_generator() -> PhiloxGenerator:
    """The process-wide secret stream used when no seed or generator is given."""
    global _default
    with _lock:
        if _default is None:
            _default = PhiloxGenerator()
        return _default


def seeded_generator(seed: int) -> PhiloxGenerator:
    """The process-wide stream of a user seed: successive calls with the same
    seed continue it (reproducible across runs, never repeating within one)."""
    check_seed(seed)
    with _lock:
        gen = _seeded.get(seed)
        if gen is None:
            gen = _seeded[seed] = PhiloxGenerator(seed)
        return gen


def _after_fork_in_child() -> None:
    # Every secret stream gets a new key: a child that kept its parent's key and
    # counters would repeat the parent's noise on other records.
    global _lock
    _lock = threading.Lock()
    for gen in list(_secret_generators):
        gen._reseed_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------- release keys

_MIX_A = np.uint64(0xBF58476D1CE4E5B9)
_MIX_B = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (Steele, Lea & Flood, OOPSLA 2014), a bijection of
    the 64-bit integers: each xor-shift and each odd multiplication is invertible."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_A
    z = (z ^ (z >> np.uint64(27))) * _MIX_B
    return z ^ (z >> np.uint64(31))


class ReleaseKey:
    """The noise key of one release, from which every record's own stream derives.

    ``ReleaseKey()`` draws a **secret** 256-bit key from the operating system;
    ``ReleaseKey.from_seed(seed, release_id)`` derives a reproducible one that
    gives **no privacy** (anyone who knows the seed regenerates the noise).

    :meth:`stream_keys` maps record ids to 64-bit Philox keys through a keyed
    bijection of the 64-bit integers (three rounds of xor with a subkey and the
    splitmix64 finalizer): under one key and context, two different records
    always get different streams, and a record's stream does not depend on the
    position or process that draws it. The subkeys are SHA-256 of the key and
    the context: different keys, or different contexts (``release()`` passes the
    release and batch names for secret keys), give unrelated streams; the same
    key and context give the same stream, so use a new key for every release.

    A ReleaseKey pickles, so that worker processes can draw the batches of one
    release: the pickle holds the key itself, so keep it as private as the data.
    Its ``repr`` and :attr:`fingerprint` never reveal it.
    """

    __slots__ = ("_key", "_seeded")

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._seeded = False

    @classmethod
    def from_seed(cls, seed: int, release_id: str) -> ReleaseKey:
        """The key a seeded release of ``release_id`` uses (reproducible, NOT private)."""
        check_seed(seed)
        if not isinstance(release_id, str):
            raise TypeError("release_id must be a string")
        key = cls.__new__(cls)
        key._key = hashlib.sha256(
            b"noiseforge/seeded-release/v1\0" + seed.to_bytes(8, "little") + release_id.encode()
        ).digest()
        key._seeded = True
        return key

    @property
    def is_secret(self) -> bool:
        return not self._seeded

    @property
    def fingerprint(self) -> str:
        """A public name of the key (SHA-256 of it): tells keys apart, reveals nothing."""
        return hashlib.sha256(b"noiseforge/release-key-fingerprint/v1\0" + self._key).hexdigest()

    def stream_keys(self, records: np.ndarray, context: str = "") -> np.ndarray:
        """(N,) uint64 Philox keys of the int64 ``records`` under ``context``."""
        sub = hashlib.sha256(
            b"noiseforge/stream-keys/v1\0" + self._key + b"\0" + context.encode()
        ).digest()
        k = np.frombuffer(sub[:24], dtype="<u8").astype(np.uint64)
        z = np.asarray(records, dtype=np.int64).view(np.uint64)
        with np.errstate(over="ignore"):
            for i in range(3):
                z = _mix64(z ^ k[i])
        return z

    def __getstate__(self) -> tuple[bytes, bool]:
        return self._key, self._seeded

    def __setstate__(self, state: tuple[bytes, bool]) -> None:
        self._key, self._seeded = state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReleaseKey) and secrets.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        kind = "seeded, not private" if self._seeded else "secret"
        return f"ReleaseKey({kind}, fingerprint={self.fingerprint[:16]})"
