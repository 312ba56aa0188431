"""The cloud server (``noiseforge cloud serve``) as a real process on loopback.

Each test talks HTTP to a server process started with the CLI (a tiny model from
tests/support/cloud_models.py), with raw sockets where a client misbehaves on purpose.
Dynamic batching and fairness are checked on an in-process CloudServer, whose
batcher counts its model calls.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch

from noiseforge.ldp.cloud import CloudRequestError, CloudUnavailableError
from noiseforge.ldp.http import HTTPCloud
from noiseforge.ldp.npy import encode_npy
from noiseforge.ldp.server import CloudServer, ServedModel, ServerLimits
from tests.support import cloud_models

ROOT = Path(__file__).resolve().parents[2]
LOAD_SECONDS = float(os.environ.get("NOISEFORGE_LOAD_SECONDS", "6"))


class ServerProcess:
    """``noiseforge cloud serve`` in a subprocess; its URL from the line it prints."""

    def __init__(self, model: str = "tests.support.cloud_models:tiny", *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NOISEFORGE_PROGRESS": "0"}
        cmd = [sys.executable, "-m", "noiseforge", "cloud", "serve", "--model", model]
        self.proc = subprocess.Popen(
            [*cmd, "--port", "0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=60):
            self.stop()
            raise RuntimeError(f"the server printed nothing: {self.proc.stderr.read()}")
        line = self.proc.stdout.readline()
        found = re.search(r"at (http://\S+)", line)
        if not found:
            self.stop()
            raise RuntimeError(f"unexpected first line {line!r}: {self.proc.stderr.read()}")
        self.url = found.group(1)
        self.host, self.port = (
            urllib.parse.urlsplit(self.url).hostname,
            urllib.parse.urlsplit(self.url).port,
        )

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess(
        "tests.support.cloud_models:tiny",
        "--header-timeout",
        "1.5",
        "--body-timeout",
        "1.5",
        "--keep-alive",
        "1",
        "--max-body-bytes",
        str(1 << 20),
    )
    yield srv
    code, err = srv.stop()
    assert code == 0, err
    assert "Traceback" not in err, err  # no request, however malformed, crashed a handler


def _raw(server, data: bytes, timeout: float = 10.0, shut: bool = False) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while piece := s.recv(1 << 16):
                chunks.append(piece)
                if _complete(b"".join(chunks)):
                    break
        return b"".join(chunks)


def _complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    return length is not None and len(body) >= int(length.group(1))


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1])


def _json_body(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def _post(server, body: bytes, kind: str = "application/octet-stream", extra: str = "") -> bytes:
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return _raw(server, head.encode() + body)


def _expected(x: np.ndarray) -> np.ndarray:
    model = cloud_models.tiny().eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x).reshape(-1, 1, 6, 6)), 1).numpy()


def test_health_info_and_openapi(server):
    client = HTTPCloud(server.url, timeout=10)
    assert client.health() == {
        "status": "ok",
        "model": "tests.support.cloud_models:tiny",
        "protocol": 1,
    }
    info = client.info()
    assert info["input_shape"] == [1, 6, 6] and info["classes"] == 5
    assert info["accepts"] == [[None, 1, 6, 6], [None, 36]]
    assert info["limits"]["max_body_bytes"] == 1 << 20
    spec = _json_body(_raw(server, b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) >= {"/health", "/v1/info", "/v1/predict"}
    assert "(rows, 1, 6, 6) or (rows, 36)" in spec["paths"]["/v1/predict"]["post"]["description"]


@pytest.mark.parametrize("shape", [(7, 1, 6, 6), (7, 36), (0, 36)], ids=["image", "flat", "empty"])
def test_answers_match_the_model(server, shape):
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    answer = _post(server, encode_npy(x))
    assert _status(answer) == 200
    got = np.load(io.BytesIO(answer.partition(b"\r\n\r\n")[2]))
    assert got.shape == (shape[0], 5)
    np.testing.assert_allclose(got, _expected(x).reshape(shape[0], 5), atol=1e-6)


def _npy_with_header(header: str) -> bytes:
    text = header.encode()
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (encode_npy(np.zeros((1, 72), np.float32)), "(rows, 1, 6, 6) or flat (rows, 36)"),
        (encode_npy(np.zeros((1, 0), np.float32)), "got shape (1, 0)"),
        (encode_npy(np.zeros((2, 6, 6), np.float32)), "got shape (2, 6, 6)"),
        (encode_npy(np.full((2, 36), np.nan, np.float32)), "must be finite"),
        (encode_npy(np.array([[0.0] * 35 + [np.inf]], np.float32)), "must be finite"),
        (b"", "no NUMPY magic"),
        (b"not numpy at all", "no NUMPY magic"),
        (b"PK\x03\x04" + bytes(100), "no NUMPY magic"),  # an npz (zip) body
        (
            _npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 36), }"),
            "got dtype float64",
        ),
        (
            _npy_with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 36), }"),
            "Fortran",
        ),
        (
            _npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 36), }"),
            "promises",
        ),
        (_npy_with_header("{'descr': 'O', 'fortran_order': False, 'shape': (1,), }"), "dtype"),
        (_npy_with_header("[1, 2, 3"), "malformed .npy header"),
        (encode_npy(np.zeros(36, np.float32)), "rows of at least one feature axis"),
    ],
)
def test_bad_bodies_get_422_naming_the_expected_input(server, body, needle):
    answer = _post(server, body)
    assert _status(answer) == 422, answer[:300]
    message = _json_body(answer)["error"]
    assert needle in message
    for internal in ("mat1", "Linear", "conv", "weight", "Traceback"):
        assert internal not in message


def test_http_level_errors(server):
    bad_length = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
    assert _status(_raw(server, bad_length)) == 400
    no_length = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    assert _status(_raw(server, no_length)) == 411
    wrong_type = _post(server, encode_npy(np.zeros((1, 36), np.float32)), kind="text/plain")
    assert _status(wrong_type) == 415
    assert _status(_raw(server, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")) == 404
    assert _status(_raw(server, b"GET /v1/predict HTTP/1.1\r\nHost: x\r\n\r\n")) == 405
    assert _status(_raw(server, b"garbage\r\n\r\n")) == 400


def test_oversized_body_is_refused_before_it_is_read(server):
    # a header claiming 95 GiB: 413 at once, though not one body byte was sent
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {95 << 30}\r\n\r\n"
    )
    t0 = time.monotonic()
    answer = _raw(server, head.encode())
    assert _status(answer) == 413 and time.monotonic() - t0 < 1.0
    assert "send fewer rows" in _json_body(answer)["error"]
    # a chunked body that grows past the limit
    chunk = bytes(256 << 10)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        answer = _raw(server, head + chunked)
    assert _status(answer) == 413
    # the client: a 4xx is the request's fault, not retried
    with pytest.raises(CloudRequestError, match=r"413|takes at most 1048576 bytes"):
        HTTPCloud(server.url, timeout=10)._predict(torch.zeros(8000, 36))
    # far over the limit the server closes before reading and the client sees a reset:
    # it asks /v1/info and still reports the request's fault, not an outage
    with pytest.raises(CloudRequestError, match="takes at most 1048576 bytes"):
        HTTPCloud(server.url, timeout=10)._predict(torch.zeros(60000, 36))


def test_chunked_framing_wins_over_a_content_length(server):
    body = encode_npy(np.zeros((2, 36), np.float32))
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = _raw(server, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert _status(answer) == 200, answer[:200]


def test_a_client_that_closes_its_side_is_taken_as_gone(server):
    """A TCP half-close cannot be told from a client that left: the server drops the
    request (and its rows) rather than computing answers nobody reads."""
    x = encode_npy(np.zeros((2, 36), np.float32))
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(x)}\r\n\r\n"
    ).encode()
    answer = _raw(server, head + x, shut=True)
    assert answer == b"" or _status(answer) == 200  # dropped, or answered before the EOF
    assert _status(_raw(server, head + x)) == 200


def test_slow_and_idle_clients_are_cut_off_and_cost_no_threads(server):
    before = server.threads()
    idle = [socket.create_connection((server.host, server.port)) for _ in range(150)]
    half = []
    for _ in range(150):  # half-sent headers
        s = socket.create_connection((server.host, server.port))
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-")
        half.append(s)
    # a body that trickles: headers complete, 10 of 1000 bytes sent
    trickle = socket.create_connection((server.host, server.port), timeout=10)
    trickle.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 1000\r\n\r\n" + bytes(10)
    )
    try:
        # meanwhile a normal client is answered at once, and no thread per socket
        t0 = time.monotonic()
        x = np.zeros((3, 36), np.float32)
        assert _status(_post(server, encode_npy(x))) == 200
        assert time.monotonic() - t0 < 1.0
        assert server.threads() <= before + 2, (before, server.threads())
        answer = b""
        while not _complete(answer):
            answer += trickle.recv(4096)
        assert _status(answer) == 408 and b"did not arrive within 1.5 s" in answer
        time.sleep(0.5)
        for s in idle + half:  # all closed by the server within its timeouts
            s.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                data = s.recv(4096)
                assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
    finally:
        for s in [*idle, *half, trickle]:
            s.close()


def test_keep_alive_connections_serve_several_requests_then_time_out(server):
    x = encode_npy(np.zeros((2, 36), np.float32))
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(x)}\r\n\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        for _ in range(3):
            s.sendall(head + x)
            answer = b""
            while not _complete(answer):
                answer += s.recv(1 << 16)
            assert _status(answer) == 200
        t0 = time.monotonic()
        assert s.recv(1) == b""  # closed after the 1 s keep-alive
        assert time.monotonic() - t0 < 4


def test_the_client_survives_a_restarted_server():
    srv = ServerProcess()
    try:
        client = HTTPCloud(srv.url, timeout=5)
        assert client.health()["status"] == "ok"
    finally:
        assert srv.stop()[0] == 0
    with pytest.raises(CloudUnavailableError):
        client.health()


def test_model_failures_are_500_without_internals():
    for name in ("broken", "nans"):
        srv = ServerProcess(f"tests.support.cloud_models:{name}")
        try:
            answer = _post(srv, encode_npy(np.zeros((4, 36), np.float32)))
            assert _status(answer) == 500
            message = _json_body(answer)["error"]
            assert "mat1" not in message and "secret" not in message
            with pytest.raises(CloudUnavailableError, match="500"):  # 5xx: retried by query_cloud
                HTTPCloud(srv.url, timeout=5)._predict(torch.zeros(4, 36))
            assert _status(_post(srv, encode_npy(np.zeros((1, 36), np.float32)))) == 200
        finally:
            code, err = srv.stop()
        assert code == 0
        logged = {"broken": "the model failed on a batch of 4 rows", "nans": "non-finite values"}
        assert logged[name] in err  # told to the operator, not to the client


def test_cli_refuses_bad_settings_in_one_line():
    for args, needle in (
        (["--port", "99999"], "a port is 0..65535"),
        (["--max-body-bytes", "0"], "must be >= 1, got 0"),
        (["--batch-wait", "nan"], "must be a finite number > 0"),
        (["--model", "nothing"], "package.module:function"),
        (["--input-shape", "0,3"], "positive integers"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "noiseforge", "cloud", "serve", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done
        assert needle in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "noiseforge", "cloud", "serve", "--model", "tests.nowhere:f"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0 and "cannot import" in done.stderr, done
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "noiseforge",
                "cloud",
                "serve",
                "--model",
                "tests.support.cloud_models:tiny",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert done.returncode == 1, done
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


# -- batching, fairness and overload (in process: the batcher counts model calls) --------


def test_concurrent_requests_share_model_calls():
    module = cloud_models.slow()
    with CloudServer(module, limits=ServerLimits(batch_wait=0.01)) as srv:
        client = HTTPCloud(srv.url, timeout=30)
        xs = [np.random.default_rng(i).random((3, 36), dtype=np.float32) for i in range(16)]
        out: dict[int, np.ndarray] = {}
        calls_before = module.calls

        def ask(i):
            out[i] = client._predict(torch.from_numpy(xs[i])).numpy()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls = module.calls - calls_before
    assert calls < 8, f"16 concurrent requests took {calls} model calls"
    for i, x in enumerate(xs):  # every request got its own rows' answers
        np.testing.assert_allclose(out[i], _expected(x), atol=1e-6)


def test_a_small_request_is_not_stuck_behind_a_large_one():
    module = cloud_models.slow()  # 50 ms per call of at most 64 rows
    limits = ServerLimits(max_batch_rows=64, batch_wait=0.001)
    with CloudServer(module, limits=limits) as srv:
        client = HTTPCloud(srv.url, timeout=60)
        big = torch.rand(64 * 30, 36)  # 30 calls alone: 1.5 s
        done: dict[str, float] = {}

        def ask(name, x):
            client._predict(x)
            done[name] = time.monotonic()

        t0 = time.monotonic()
        first = threading.Thread(target=ask, args=("big", big))
        first.start()
        time.sleep(0.2)
        ask("small", torch.rand(8, 36))
        first.join()
    assert done["small"] - t0 < 1.2, done["small"] - t0  # the big one alone needs >= 1.5 s
    assert done["big"] > done["small"]


def test_a_full_queue_answers_503_with_retry_after():
    module = cloud_models.slow()
    limits = ServerLimits(max_batch_rows=8, max_queued_rows=40, batch_wait=0.001)
    with CloudServer(module, limits=limits) as srv:
        host, port = srv.url.rsplit(":", 1)
        target = type("T", (), {"host": host.split("//")[1], "port": int(port)})
        x = encode_npy(np.zeros((30, 36), np.float32))
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda: results.append(_post(target, x))) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    codes = sorted(_status(r) for r in results)
    assert 200 in codes and 503 in codes, codes
    refused = next(r for r in results if _status(r) == 503)
    assert b"retry-after: 1" in refused.lower()
    assert "rows are waiting" in _json_body(refused)["error"]


def test_one_clients_rows_cannot_fail_another_clients_request():
    """Rows that make the model answer NaN fail their own request only, though they
    share a model call with an honest one."""
    with CloudServer(cloud_models.poisoned(), limits=ServerLimits(batch_wait=0.05)) as srv:
        client = HTTPCloud(srv.url, timeout=30)
        honest = torch.rand(4, 36)
        poison = torch.full((3, 36), 99.0)
        got: dict[str, object] = {}

        def ask(name, x):
            try:
                got[name] = client._predict(x)
            except CloudUnavailableError as exc:
                got[name] = exc

        threads = [threading.Thread(target=ask, args=a) for a in (("h", honest), ("p", poison))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert isinstance(got["p"], CloudUnavailableError) and "500" in str(got["p"])
    assert isinstance(got["h"], torch.Tensor)
    np.testing.assert_allclose(got["h"].numpy(), _expected(honest.numpy()), atol=1e-6)


def test_round_robin_when_more_requests_wait_than_a_call_has_rows():
    module = cloud_models.slow()
    with CloudServer(module, limits=ServerLimits(max_batch_rows=4, batch_wait=0.001)) as srv:
        client = HTTPCloud(srv.url, timeout=60)
        done: dict[str, float] = {}

        def ask(name, rows):
            client._predict(torch.rand(rows, 36))
            done[name] = time.monotonic()

        big = [threading.Thread(target=ask, args=(f"big{i}", 40)) for i in range(4)]
        for t in big:
            t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        ask("small", 1)
        for t in big:
            t.join()
    # each big one needs 40 of the 160 rows at 4 rows per 50 ms call: >= 2 s in all
    assert done["small"] - t0 < 0.5, done["small"] - t0
    assert min(done[f"big{i}"] for i in range(4)) > done["small"]


def test_a_client_that_leaves_takes_its_rows_out_of_the_queue():
    module = cloud_models.slow()
    with CloudServer(module, limits=ServerLimits(max_batch_rows=8, batch_wait=0.001)) as srv:
        host, port = srv.url.split("//")[1].rsplit(":", 1)
        body = encode_npy(np.zeros((800, 36), np.float32))  # 100 calls: 5 s
        with socket.create_connection((host, int(port))) as s:
            s.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            time.sleep(0.3)
        time.sleep(0.5)
        calls = module.calls
        assert srv.batcher.queued_rows == 0
        time.sleep(0.3)
        assert module.calls - calls <= 1  # the model stopped working for it


def test_limits_and_connections_count_as_documented():
    with pytest.raises(ValueError, match="max_batch_rows must be an integer"):
        ServerLimits(max_batch_rows=8.0)
    with CloudServer(cloud_models.tiny(), limits=ServerLimits(max_connections=2)) as srv:
        host, port = srv.url.split("//")[1].rsplit(":", 1)
        with socket.create_connection((host, int(port))):  # one idle connection
            assert HTTPCloud(srv.url, timeout=5).health()["status"] == "ok"  # the second


def test_sigterm_answers_requests_in_flight():
    srv = ServerProcess("tests.support.cloud_models:slow", "--shutdown-timeout", "1.5")
    answers: list[bytes] = []
    body = encode_npy(np.zeros((4000, 36), np.float32))  # 4 calls of 1024 rows: ~0.2 s
    slow_body = encode_npy(np.zeros((1, 36), np.float32))
    threads = [
        threading.Thread(target=lambda b=b: answers.append(_post(srv, b)))
        for b in [body] * 6 + [slow_body] * 4
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)
    code, err = srv.stop()
    for t in threads:
        t.join()
    assert code == 0, err
    assert "Traceback" not in err, err
    for answer in answers:  # each request got an answer: done, or a JSON 503 to retry
        assert _status(answer) in (200, 503), answer[:200]
        if _status(answer) == 503:
            assert "shutting down" in _json_body(answer)["error"]


def test_served_model_checks_its_declaration():
    with pytest.raises(ValueError, match="cannot tell the input shape"):
        ServedModel(torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="positive integers"):
        ServedModel(torch.nn.Linear(3, 2), input_shape=(0,))
    with pytest.raises(ValueError, match=r"\(N, classes\) scores"):
        ServedModel(torch.nn.Flatten(0), input_shape=(3,))
    with pytest.raises(ValueError, match="batch_wait must be a number > 0"):
        ServerLimits(batch_wait=float("nan"))
    with pytest.raises(ValueError, match="max_batch_rows must be an integer"):
        ServerLimits(max_batch_rows=2.5)


# -- load ------------------------------------------------------------------------------


def test_load_64_clients_no_resets_no_lost_answers(server):
    """64 concurrent clients for NOISEFORGE_LOAD_SECONDS (6 s here; the README's figure
    is 20 s): every request answered 200 with its own rows' probabilities."""
    rng = np.random.default_rng(7)
    inputs = [rng.random((8, 36), dtype=np.float32) for _ in range(32)]
    expected = [_expected(x) for x in inputs]
    bodies = [encode_npy(x) for x in inputs]
    stop = time.monotonic() + LOAD_SECONDS
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(k):
        i = k
        while time.monotonic() < stop:
            i = (i + 1) % len(bodies)
            t0 = time.monotonic()
            try:
                answer = _post(server, bodies[i])
                got = np.load(io.BytesIO(answer.partition(b"\r\n\r\n")[2]))
                ok = _status(answer) == 200 and np.allclose(got, expected[i], atol=1e-6)
                problem = None if ok else f"status {answer[:40]!r}"
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            with lock:
                latencies.append(time.monotonic() - t0)
                if problem:
                    failures.append(problem)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array(latencies)
    print(
        f"\nload: {len(lat)} requests of 8 rows in {LOAD_SECONDS:g} s from 64 clients: "
        f"{len(lat) * 8 / LOAD_SECONDS:.0f} rows/s, p50 {np.percentile(lat, 50) * 1e3:.1f} ms, "
        f"p99 {np.percentile(lat, 99) * 1e3:.1f} ms"
    )
    assert not failures, failures[:5]
    assert len(lat) > 64


# -- the OpenAPI contract, fuzzed (bounded: tests/support/fuzzing.py) ---------------------------

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import strategies as st  # noqa: E402

from tests.support.fuzzing import fuzz_settings  # noqa: E402


def _npy_bodies() -> st.SearchStrategy[bytes]:
    """Valid rows, wrong shapes, hostile values and garbage: what a client may send."""
    rows = st.integers(0, 6)
    good = rows.map(lambda n: encode_npy(np.random.default_rng(n).random((n, 36), np.float32)))
    shaped = st.tuples(rows, st.integers(0, 80)).map(lambda s: encode_npy(np.ones(s, np.float32)))
    values = st.lists(
        st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=36, max_size=36
    ).map(lambda v: encode_npy(np.array([v], np.float32)))
    mutated = st.tuples(good, st.integers(0, 200), st.binary(min_size=1, max_size=8)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
    )
    return st.one_of(good, shaped, values, mutated, st.binary(max_size=300))


schemathesis.openapi.media_type("application/x-npy", _npy_bodies())
schemathesis.openapi.media_type("application/octet-stream", _npy_bodies())


def test_the_server_keeps_its_openapi_contract(server):
    """schemathesis against /openapi.json: every answer has a documented status, content
    type and body, and none is a 5xx. The bodies come from _npy_bodies (valid rows, wrong
    shapes, non-finite values, mutated and random bytes): a binary body has no
    schema-violating form for schemathesis's negative mode to draw."""
    from hypothesis import given
    from schemathesis.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"GET /health", "GET /v1/info", "POST /v1/predict"}
    for operation in operations:
        post = operation.method.upper() == "POST"
        strategy = operation.as_strategy()

        @fuzz_settings(40 if post else 5)
        @given(strategy)
        def check(case):
            # "binary" admits any bytes, so the schema cannot say which bodies are valid
            # .npy rows: a 422 for a schema-valid body is the server's right
            case.call_and_validate(timeout=10, excluded_checks=[positive_data_acceptance])

        check()


_VALID = (
    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Length: %d\r\n\r\n" % len(encode_npy(np.zeros((2, 36), np.float32)))
) + encode_npy(np.zeros((2, 36), np.float32))


@st.composite
def _mutated_requests(draw) -> bytes:
    data = bytearray(_VALID)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(
                st.sampled_from([b"\r\n", b"\x00", b":", b" ", b"999999999999", b"\xff\xfe", b"-1"])
            )
        elif at < len(data):
            del data[at : at + draw(st.integers(1, 20))]
    return bytes(data)


def test_fuzzed_raw_requests_never_break_the_server(server):
    """Mutated bytes of a valid request: a well-formed 2xx/4xx answer or a closed
    connection (a cut request times out), never a 5xx or a dead server."""
    from hypothesis import given

    @fuzz_settings(60)
    @given(_mutated_requests())
    def check(request):
        answer = _raw(server, request, timeout=5, shut=True)
        if answer:
            assert answer.startswith(b"HTTP/1.1 "), answer[:100]
            assert _status(answer) < 500 or _status(answer) == 503, answer[:300]

    check()
    assert HTTPCloud(server.url, timeout=5).health()["status"] == "ok"
