"""Bounded fuzzing of ``HNSWIndex.from_bytes``: mutated index files, re-signed with a
valid checksum so that every mutation reaches the parser, must load (and then
search, add and save without trouble) or raise IndexFormatError -- never crash,
hang or raise anything else.

A crash would kill pytest, so the files are loaded in a worker process that
reports on each one; a worker that dies or stops answering fails the case (and
hypothesis shrinks it; the worker restarts). Budgets come from
:func:`tests.fuzzing.fuzz_settings` (fixed seed; ``NOISEFORGE_FUZZ_SCALE=N`` for
longer runs).
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from noiseforge import _native
from noiseforge.index import HNSWIndex
from tests.support.fuzzing import fuzz_settings

pytestmark = pytest.mark.skipif(_native.native() is None, reason="the native module is not built")

REPO = Path(__file__).resolve().parents[2]

# Loads one file per request (8-byte length, then the bytes) and answers with one JSON
# line: refused (with the error), loaded (with any problem found using the index), or
# unclean (an exception other than IndexFormatError).
WORKER = r"""
import faulthandler, json, struct, sys
import numpy as np
from noiseforge.index import HNSWIndex, IndexFormatError

faulthandler.enable()


def stored_ids(blob, index):
    # the ids follow the header, the SQ8 range and the vectors (hnsw.cpp, Index::serialize)
    n, dim = len(index), index.dim
    at = (60 if blob[8:12] == struct.pack("<I", 2) else 56) + 4 * n * dim
    at += 8 * dim if index.quantization == "sq8" else 0
    return set(np.frombuffer(blob, np.int64, n, at).tolist())


def use(index, blob):
    problems = []
    n, dim = len(index), index.dim
    if blob[8:12] == struct.pack("<I", 2) and index.to_bytes() != blob:
        problems.append("saving the loaded index does not give the same bytes")
    stored = stored_ids(blob, index)
    q = np.random.default_rng(n).standard_normal((4, dim)).astype(np.float32)
    if n:
        k = min(3, n)
        ids, scores = index.search(q, k, num_threads=2)
        if not set(ids.reshape(-1).tolist()) <= stored:
            problems.append(f"search returned ids {ids.tolist()} that are not in the index")
        if not np.isfinite(scores).all() or (ids < 0).any():
            problems.append(f"a full search returned padding or non-finite scores {scores}")
        ids2, _ = index.search(q, k, exclude=[row[:1] for row in ids], ef=1, num_threads=1)
        if any(int(ids[i, 0]) in ids2[i].tolist() for i in range(4)):
            problems.append("an excluded id was returned")
    top = max(stored, default=-1)
    if top < 2**63 - 3:
        index.add(q[:2], ids=[top + 1, top + 2], num_threads=2)
        index.search(q, min(3, len(index)), num_threads=2)
    again = HNSWIndex.from_bytes(index.to_bytes())
    if len(again) != len(index):
        problems.append("the saved index reloads with another size")
    return problems


def probe(blob):
    try:
        index = HNSWIndex.from_bytes(blob)
    except IndexFormatError as exc:
        return {"status": "refused", "message": str(exc)}
    except BaseException as exc:
        return {"status": "unclean", "message": f"{type(exc).__name__}: {exc}"}
    try:
        return {"status": "loaded", "size": len(index), "problems": use(index, blob)}
    except BaseException as exc:
        return {"status": "unclean", "message": f"using the loaded index: {type(exc).__name__}: {exc}"}


print("ready", flush=True)
while True:
    head = sys.stdin.buffer.read(8)
    if len(head) < 8:
        break
    blob = sys.stdin.buffer.read(struct.unpack("<Q", head)[0])
    print(json.dumps(probe(blob)), flush=True)
"""


class Worker:
    """The worker process; restarted after a crash or a hang."""

    def __init__(self, code: str = WORKER, timeout_s: float = 60.0) -> None:
        self.code, self.timeout_s = code, timeout_s
        self.proc: subprocess.Popen | None = None
        self.stderr = tempfile.TemporaryFile()

    def _start(self) -> None:
        self.stderr.seek(0)
        self.stderr.truncate()
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=REPO,
            env=env,
        )
        line = self._line(120.0)
        if line != "ready":
            raise RuntimeError(f"the fuzz worker did not start: {line!r} {self._stderr()}")

    def _line(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline().decode().strip()

    def _stderr(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]

    def probe(self, blob: bytes) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(struct.pack("<Q", len(blob)) + blob)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._line(self.timeout_s)
        if line:
            return json.loads(line)
        if line is None:
            self.proc.kill()
            self.proc.wait()
            return {"status": "hung", "message": self._stderr()}
        code = self.proc.wait()
        return {"status": "crashed", "message": f"exit status {code}\n{self._stderr()}"}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


# --------------------------------------------------------------------------- the files


def fnv1a(data: bytes) -> int:
    h = 1469598103934665603
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def resign(blob: bytes) -> bytes:
    """Recompute the trailing FNV-1a checksum (as a crafted file would)."""
    if len(blob) < 16:
        return blob
    return blob[:-8] + fnv1a(blob[:-8]).to_bytes(8, "little")


@dataclass(frozen=True)
class Section:
    offset: int
    words: int  # 4-byte words (ids and seed: 8-byte values over 2 words)
    kind: str  # what values are interesting there


def _v1(blob: bytes) -> bytes:
    """The version 1 form of a float32-walk file (no quantization field)."""
    return resign(blob[:8] + struct.pack("<I", 1) + blob[12:28] + blob[32:])


def _build(dim: int, n: int, metric: str, quantization: str, M: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    index = HNSWIndex(
        dim, metric=metric, M=M, ef_construction=8, seed=seed, quantization=quantization
    )
    if n:
        index.add(
            rng.standard_normal((n, dim)).astype(np.float32),
            ids=rng.permutation(10 * n)[:n],
            num_threads=1,
        )
    return index.to_bytes()


BASES: list[bytes] = []
for args in [
    (5, 40, "l2", "none", 4, 1),
    (6, 40, "ip", "sq8", 3, 2),
    (4, 25, "cosine", "sq8", 2, 3),
    (3, 0, "l2", "sq8", 2, 4),
    (2, 1, "ip", "none", 2, 5),
]:
    BASES.append(_build(*args))
BASES.append(_v1(BASES[0]))


def sections(blob: bytes) -> dict[str, Section]:
    """Where the fields of a valid file lie (hnsw.cpp, Index::serialize)."""
    version = struct.unpack_from("<I", blob, 8)[0]
    dim, _metric, m, _efc = struct.unpack_from("<IIII", blob, 12)
    pos = 28
    quant = 0
    if version >= 2:
        quant = struct.unpack_from("<I", blob, pos)[0]
        pos += 4
    count = struct.unpack_from("<Q", blob, pos + 8)[0]
    out = {"header": Section(8, (pos + 28 - 8) // 4, "int")}
    pos += 28
    if quant == 1:
        out["sq8 range"] = Section(pos, 2 * dim, "float")
        pos += 8 * dim
    out["vectors"] = Section(pos, count * dim, "float")
    pos += 4 * count * dim
    out["ids"] = Section(pos, 2 * count, "id")
    pos += 8 * count
    out["levels"] = Section(pos, count, "level")
    pos += 4 * count
    out["level-0 links"] = Section(pos, count * (2 * m + 1), "link")
    pos += 4 * count * (2 * m + 1)
    out["upper links"] = Section(pos, (len(blob) - 8 - pos) // 4, "link")
    return {k: v for k, v in out.items() if v.words}


INTS = [0, 1, 2, 3, 4, 7, 8, 255, 256, 257, 2**16, 2**20, 2**20 + 1, 2**31 - 1, 2**31, 2**32 - 1]
VALUES = {
    "int": [struct.pack("<I", v) for v in INTS] + [struct.pack("<q", v) for v in (-1, 2**62)],
    "float": [
        struct.pack("<f", v)
        for v in (
            float("nan"),
            float("inf"),
            -float("inf"),
            1e15,
            1.0000001e15,
            -1e16,
            3e38,
            -0.0,
            1e-45,
            0.0,
            1.0,
        )
    ],
    "id": [struct.pack("<q", v) for v in (-1, -(2**63), 0, 1, 7, 2**63 - 1)],
    "level": [struct.pack("<i", v) for v in (-1, 0, 1, 2, 3, 64, 65, 2**31 - 1)],
    "link": [struct.pack("<I", v) for v in (0, 1, 2, 3, 4, 5, 8, 9, 24, 25, 39, 40, 41, 2**32 - 1)],
}

WORD = st.integers(0, 2**20)
mutation = st.one_of(
    # a value that means something to the parser, at a word of one of the sections
    st.tuples(st.just("value"), st.integers(0, 5), WORD, st.integers(0, 20)),
    # changes that keep the file valid, so that the loaded index is used: a level-0 link
    # to another node (or a new link count), a header field within its range, a vector
    # component within the accepted magnitude
    st.tuples(st.just("relink"), WORD, WORD, WORD),
    st.tuples(
        st.just("header"),
        st.sampled_from(["metric", "M", "ef_construction", "seed"]),
        st.integers(0, 2**64 - 1),
    ),
    st.tuples(
        st.just("component"),
        WORD,
        st.one_of(st.floats(-1e15, 1e15), st.sampled_from([1e15, -1e15, 0.0, -0.0, 1e-45])),
    ),
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("bytes"), st.integers(0, 2**20), st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("cut"), st.integers(0, 2**20)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=12)),
)


def mutate(blob: bytes, mutations) -> tuple[bytes, list[str]]:
    data = bytearray(blob)
    done = []
    # the edits placed by the file's layout first, while the bytes are still where the
    # layout says; blind edits (which may move or cut them) after
    semantic = ("value", "relink", "header", "component")
    for m in sorted(mutations, key=lambda m: m[0] not in semantic):
        kind = m[0]
        if kind == "value":
            secs = sections(blob)
            name = list(secs)[m[1] % len(secs)]
            sec = secs[name]
            values = VALUES[sec.kind]
            value = values[m[3] % len(values)]
            at = sec.offset + 4 * (m[2] % sec.words)
            data[at : at + len(value)] = value
            data = data[: len(blob)] if len(data) > len(blob) else data
            done.append(f"{name} word {(at - sec.offset) // 4} = {value.hex()}")
        elif kind == "relink":
            secs, m_links = sections(blob), 2 * struct.unpack_from("<I", blob, 20)[0]
            count = secs["levels"].words if "levels" in secs else 0
            if count:
                node, slot = m[1] % count, m[2] % (m_links + 1)
                value = m[3] % (m_links + 1) if slot == 0 else m[3] % count
                struct.pack_into(
                    "<I",
                    data,
                    secs["level-0 links"].offset + 4 * (node * (m_links + 1) + slot),
                    value,
                )
                done.append(f"node {node} level-0 slot {slot} = {value}")
        elif kind == "header":
            field, raw = m[1], m[2]
            at, fmt, value = {
                "metric": (16, "<I", raw % 3),
                "M": (20, "<I", 2 + raw % 255),
                "ef_construction": (24, "<I", 1 + raw % 2**20),
                "seed": (32 if blob[8] == 2 else 28, "<Q", raw),
            }[field]
            struct.pack_into(fmt, data, at, value)
            done.append(f"{field} = {value}")
        elif kind == "component":
            secs = sections(blob)
            if "vectors" in secs:
                sec = secs["vectors"]
                at = sec.offset + 4 * (m[1] % sec.words)
                struct.pack_into("<f", data, at, m[2])
                done.append(f"vector word {(at - sec.offset) // 4} = {m[2]!r}")
        elif kind == "flip":
            at = m[1] % len(data)
            data[at] ^= 1 << m[2]
            done.append(f"flip bit {m[2]} of byte {at}")
        elif kind == "bytes":
            at = 8 + m[1] % max(1, len(data) - 8)
            data[at : at + len(m[2])] = m[2]
            done.append(f"bytes {m[2].hex()} at {at}")
        elif kind == "cut":
            at = 8 + m[1] % max(1, len(data) - 8)
            data = data[:at] + data[-8:]  # keep a checksum slot
            done.append(f"cut the body at {at}")
        else:
            at = 8 + m[1] % max(1, len(data) - 8)
            data[at:at] = m[2]
            done.append(f"insert {m[2].hex()} at {at}")
    return resign(bytes(data)), done


@fuzz_settings(1500)
@given(
    base=st.integers(0, len(BASES) - 1),
    mutations=st.lists(mutation, min_size=1, max_size=4),
)
def test_fuzz_mutated_files_load_or_raise_index_format_error(worker, base, mutations):
    blob, done = mutate(BASES[base], mutations)
    result = worker.probe(blob)
    status = result["status"]
    event(status)
    where = f"base file {base}, mutations: {done}"
    assert status in ("refused", "loaded"), f"{status}: {result.get('message')}\n{where}"
    if status == "refused":
        message = result["message"]
        event("refused: " + message.split(": ", 1)[-1][:40])
        assert message.startswith("cannot load HNSW index: ") and len(message) > 30, message
        assert "0x" not in message, f"a raw pointer in the message: {message}"
    else:
        assert result["problems"] == [], f"{result['problems']}\n{where}"


def test_unmutated_files_load_cleanly(worker):
    """The fuzz's own check: every base file loads and passes the worker's use."""
    for i, blob in enumerate(BASES):
        result = worker.probe(blob)
        assert result["status"] == "loaded" and result["problems"] == [], (i, result)


@pytest.mark.parametrize(
    ("action", "status"), [("os.abort()", "crashed"), ("time.sleep(60)", "hung")]
)
def test_the_harness_reports_crashes_and_hangs(action, status):
    """A file that kills the worker or stalls it fails its case: the fuzz can fail."""
    code = WORKER.replace("    print(json.dumps(probe(blob)), flush=True)", f"    {action}")
    w = Worker("import os, time\n" + code, timeout_s=3.0)
    try:
        result = w.probe(BASES[0])
        assert result["status"] == status, result
        assert w.probe(BASES[0])["status"] == status  # restarted, and the same again
    finally:
        w.close()
