"""Answers you can trust: query_cloud checks every batch of answers before keeping
it, binds its checkpoint to the query set, and turns every transport failure --
reset connections, truncated, malformed or hostile bodies, a server that trickles
-- into retries and then a CloudQueryError, within the timeout. The misbehaving
servers are real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from noiseforge.ldp import (
    CloudAnswerError,
    CloudModel,
    CloudQueryError,
    InProcessCloud,
    PrivacyLedger,
    ReleaseIntegrityError,
    query_cloud,
    release,
)
from noiseforge.ldp.cloud import CloudTimeoutError, CloudUnavailableError
from noiseforge.ldp.http import HTTPCloud
from noiseforge.ldp.npy import decode_npy, encode_npy
from noiseforge.ldp.server import CloudServer


def _batch(n=10, d=3, seed=1):
    x = torch.rand(n, d, generator=torch.Generator().manual_seed(seed))
    return release(
        x, np.arange(n), PrivacyLedger(100.0), epsilon=5.0, lower=0.0, upper=1.0, seed=seed
    )


class FlakyCloud(CloudModel):
    """An in-process cloud that fails on chosen calls (to test retries and resuming)."""

    def __init__(self, fail_calls=()):
        torch.manual_seed(0)
        self.inner = InProcessCloud(torch.nn.Linear(3, 4))
        self.fail_calls = set(fail_calls)
        self.calls = 0
        self.rows_seen = 0

    def _predict(self, data):
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("connection reset by peer")
        self.rows_seen += len(data)
        return self.inner._predict(data)


def test_query_cloud_retries_checkpoints_and_resumes(tmp_path):
    batch = _batch()
    want = FlakyCloud().inner.predict(batch)
    flaky = FlakyCloud([2])  # the second request fails once, then succeeds
    got = query_cloud(flaky, batch, batch_size=4, retries=2, backoff=0.0, progress=False)
    torch.testing.assert_close(got, want)
    ckpt = tmp_path / "answers.pt"
    dead = FlakyCloud([3, 4, 5])  # the third batch never succeeds
    with pytest.raises(CloudQueryError, match=r"rows 8\.\.9 .*8 answers are kept"):
        query_cloud(
            dead, batch, batch_size=4, retries=2, backoff=0.0, checkpoint=ckpt, progress=False
        )
    resumed = FlakyCloud()
    got = query_cloud(resumed, batch, batch_size=4, backoff=0.0, checkpoint=ckpt, progress=False)
    torch.testing.assert_close(got, want)
    assert resumed.rows_seen == 2, "a resumed run asks only for the missing rows"
    with pytest.raises(TypeError, match="not raw data"):
        query_cloud(resumed, torch.rand(2, 3), progress=False)


def test_only_cloud_models_are_queried_and_their_seal_checks_cannot_be_skipped():
    batch = _batch(4)
    sent = []

    class DuckCloud:  # not a CloudModel: it would see the batch unchecked
        def predict(self, b):
            sent.append(b.data.clone())

    with pytest.raises(TypeError, match=r"must be a noiseforge\.ldp\.CloudModel"):
        query_cloud(DuckCloud(), batch, progress=False)
    with pytest.raises(TypeError, match="CloudModel"):
        query_cloud(torch.nn.Linear(3, 2), batch, progress=False)

    class Careless(CloudModel):  # overrides predict itself, skipping the check
        def predict(self, b):
            sent.append(b.data.clone())
            return torch.full((len(b), 2), 0.5)

        def _predict(self, data):
            sent.append(data.clone())
            return torch.full((len(data), 2), 0.5)

    batch.data.fill_(0.5)  # edited after release
    with pytest.raises(ReleaseIntegrityError):
        query_cloud(Careless(), batch, retries=0, progress=False)
    assert sent == []


def test_a_non_tensor_answer_is_an_answer_error():
    class Lists(CloudModel):
        def _predict(self, data):
            return [[0.5, 0.5]] * len(data)

    with pytest.raises(CloudAnswerError, match="answered a list"):
        Lists().predict(_batch(3))
    with pytest.raises(CloudAnswerError):
        query_cloud(Lists(), _batch(3), retries=1, backoff=0, progress=False)


def test_a_missing_checkpoint_folder_is_refused_before_anything_is_sent(tmp_path):
    cloud = FlakyCloud()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        query_cloud(cloud, _batch(), checkpoint=tmp_path / "no" / "a.pt", progress=False)
    assert cloud.calls == 0


def test_a_checkpoint_belongs_to_its_query_set(tmp_path):
    ckpt = tmp_path / "answers.pt"
    batch = _batch(10)
    with pytest.raises(CloudQueryError):
        query_cloud(
            FlakyCloud([2, 3]),
            batch,
            batch_size=4,
            retries=1,
            backoff=0,
            checkpoint=ckpt,
            progress=False,
        )
    cloud = FlakyCloud()
    # another query set of the same length is refused, not half-answered from the file
    with pytest.raises(ValueError, match="another query set"):
        query_cloud(cloud, _batch(10, seed=2), checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="another query set"):
        query_cloud(cloud, batch._rows(0, 8), checkpoint=ckpt, progress=False)
    assert cloud.calls == 0
    # a checkpoint holding more answers than rows, damaged answers, a truncated file
    state = torch.load(ckpt, weights_only=True)
    for bad, message in (
        ({**state, "answers": torch.ones(11, 4) / 4}, "11 answers for a query set of 10"),
        ({**state, "classes": torch.tensor([4, 4])}, "class count"),
        ({**state, "answers": state["answers"].to_sparse()}, "no dense"),
        # a stride-0 view: 8 x 2^24 answers from a 1 KB file
        ({**state, "answers": torch.full((1, 1), 2.0**-24).expand(8, 2**24)}, "no dense"),
        ({**state, "answers": torch.full((4, 4), float("nan"))}, "invalid answers"),
        ({**state, "rows": 12}, "written for 12 rows"),
        ({**state, "format": "x"}, "not a noiseforge answers checkpoint"),
    ):
        torch.save(bad, ckpt)
        with pytest.raises(ValueError, match=message):
            query_cloud(cloud, batch, checkpoint=ckpt, progress=False)
    ckpt.write_bytes(ckpt.read_bytes()[:50])
    with pytest.raises(ValueError, match="not a readable answers checkpoint"):
        query_cloud(cloud, batch, checkpoint=ckpt, progress=False)
    assert cloud.calls == 0


class AnsweringCloud(CloudModel):
    """A cloud that answers ``make(rows, call)`` (to test the answer checks)."""

    def __init__(self, make):
        self.make = make
        self.calls = 0

    def _predict(self, data):
        self.calls += 1
        return self.make(data.shape[0], self.calls)


def _uniform(rows, c=4):
    return torch.full((rows, c), 1.0 / c)


BAD_ANSWERS = [
    pytest.param(
        lambda r, k: _uniform(r).index_fill(0, torch.tensor([1]), float("nan")), "nan", id="nan"
    ),
    pytest.param(
        lambda r, k: _uniform(r).index_fill(0, torch.tensor([0]), float("inf")), "inf", id="inf"
    ),
    pytest.param(
        lambda r, k: _uniform(r) * torch.tensor([2.0, -1.0, 0.0, 0.0]), "negative", id="negative"
    ),
    pytest.param(lambda r, k: _uniform(r) * 3, "sum to 3", id="unnormalised"),
    pytest.param(lambda r, k: _uniform(r, 4 if k == 1 else 5), "5 classes", id="class-count"),
    pytest.param(lambda r, k: torch.ones(r, 4, dtype=torch.int64), "dtype", id="integers"),
]


@pytest.mark.parametrize(("make", "message"), BAD_ANSWERS)
def test_invalid_answers_are_retried_then_refused_and_never_kept(tmp_path, make, message):
    ckpt = tmp_path / "a.pt"
    cloud = AnsweringCloud(make)
    with pytest.raises(CloudAnswerError, match=message):
        query_cloud(
            cloud, _batch(), batch_size=5, retries=1, backoff=0, checkpoint=ckpt, progress=False
        )
    if ckpt.exists():  # only the valid first batch of the class-count case was kept
        state = torch.load(ckpt, weights_only=True)
        assert state["answers"].shape == (5, 4) and torch.isfinite(state["answers"]).all()


# --------------------------------------------------------------------------- transport


class ScriptedServer:
    """A TCP server on 127.0.0.1 that answers every connection with ``script(conn)``."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        conn.settimeout(10)
        try:
            _read_request(conn)
            self.script(conn, self._stop)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)


def _respond(body, status=b"200 OK", length=None):
    length = len(body) if length is None else length
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n" + body
    )


def _trickle(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"\x93")
        time.sleep(0.2)


def _truncated(conn, stop):
    conn.sendall(_respond(encode_npy(np.full((3, 4), 0.25, np.float32))[:40], length=1000))


def _not_npy(conn, stop):
    conn.sendall(_respond(b"<html>a proxy error page</html>"))


def _hostile_header(conn, stop):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1000000000000), }"
    header = header.ljust(118) + "\n"
    conn.sendall(_respond(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()))


def _reset(conn, stop):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _server_error(conn, stop):
    conn.sendall(_respond(b'{"error": "overloaded"}', status=b"503 Service Unavailable"))


TRANSPORT_FAILURES = [
    pytest.param(_trickle, CloudTimeoutError, "within 1.5 s", id="trickle"),
    pytest.param(_truncated, CloudUnavailableError, "IncompleteRead|cut short", id="truncated"),
    pytest.param(_not_npy, CloudUnavailableError, "not a valid array", id="not-npy"),
    pytest.param(_hostile_header, CloudUnavailableError, "header promises", id="hostile-header"),
    pytest.param(_reset, CloudUnavailableError, "failed", id="reset"),
    pytest.param(_server_error, CloudUnavailableError, "503", id="server-error"),
]


@pytest.mark.parametrize(("script", "kind", "message"), TRANSPORT_FAILURES)
def test_transport_failures_are_typed_retried_and_reported(script, kind, message):
    batch = _batch(3)
    with ScriptedServer(script) as server:
        client = HTTPCloud(server.url, timeout=1.5)
        t0 = time.monotonic()
        with pytest.raises(kind, match=message):
            client.predict(batch)
        assert time.monotonic() - t0 < 3.0, "the timeout bounds the whole exchange"
        t0 = time.monotonic()
        with pytest.raises(CloudQueryError, match="failed 2 times"):
            query_cloud(client, batch, retries=1, backoff=0.0, progress=False)
        assert time.monotonic() - t0 < 5.0
        assert server.connections >= 3, "query_cloud retried"


def test_a_refused_request_is_reported_without_retries():
    def bad_request(conn, stop):
        conn.sendall(_respond(b'{"error": "expected 784 features"}', status=b"422 Unprocessable"))

    with ScriptedServer(bad_request) as server:
        with pytest.raises(CloudQueryError, match=r"refused rows 0\.\.2 .*784 features"):
            query_cloud(HTTPCloud(server.url, timeout=2), _batch(3), retries=3, progress=False)
        assert server.connections == 1


def test_the_http_cloud_agrees_with_the_in_process_cloud():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    batch = _batch(37)
    with CloudServer(model, name="toy") as server:
        client = HTTPCloud(server.url, timeout=10)
        assert client.health() == {"status": "ok", "model": "toy", "protocol": 1}
        assert client.info()["input_shape"] == [3]
        remote = query_cloud(client, batch, batch_size=10, progress=False)
        bad = urllib.request.Request(
            server.url + "/v1/predict",
            data=b"not numpy",
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=10)
        assert err.value.code == 422
    torch.testing.assert_close(remote, InProcessCloud(model).predict(batch))
    with CloudServer(model) as server:
        url = server.url
    with pytest.raises(CloudQueryError, match="failed 2 times"):
        query_cloud(HTTPCloud(url, timeout=2), batch, retries=1, backoff=0.0, progress=False)


def test_the_npy_reader_refuses_what_it_should():
    good = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(decode_npy(encode_npy(good)), good)
    body = encode_npy(good)
    for bad, message in (
        (b"not numpy", "no NUMPY magic"),
        (body[:-4], "body holds 20 bytes"),
        (body + b"\0" * 4, "body holds 28 bytes"),
        (encode_npy(good.reshape(6)), "rank-2"),
        (body.replace(b"<f4", b">f4"), "little-endian float32"),
        (body.replace(b"'<f4'", b"'|O' "), "float32"),
    ):
        with pytest.raises(ValueError, match=message):
            decode_npy(bad)
    # headers that numpy's own parser fails on in other ways: still a ValueError
    for descr in ("('<f4',)", "()", "-" * 3000 + "1", "(" * 199):
        header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (2, 3), }}"
        header = header.ljust(64 * (len(header) // 64 + 1) - 11) + "\n"
        raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
        with pytest.raises(ValueError, match=r"malformed \.npy header"):
            decode_npy(raw + b"\0" * 24)
    for bad, message in ():
        with pytest.raises(ValueError, match=message):
            decode_npy(bad)


def test_the_timeout_bounds_a_slow_connect_too(monkeypatch):
    import socket as socket_module

    real = socket_module.getaddrinfo

    def slow(*args, **kwargs):
        time.sleep(1.2)  # a slow resolver, longer than the timeout
        return real(*args, **kwargs)

    with ScriptedServer(_trickle) as server:
        monkeypatch.setattr(socket_module, "getaddrinfo", slow)
        client = HTTPCloud(server.url, timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(CloudTimeoutError):
            client.predict(_batch(3))
        assert time.monotonic() - t0 < 2.0


def test_an_invalid_port_is_refused_when_the_client_is_made():
    with pytest.raises(ValueError, match="invalid port"):
        HTTPCloud("http://127.0.0.1:99999")


def test_an_http10_server_trickling_its_body_is_cut_off_on_time():
    def trickle_http10(conn, stop):  # the answer ends the connection: http.client closes its
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n")  # socket object early
        while not stop.is_set():
            conn.sendall(b"\x93")
            time.sleep(0.2)

    with ScriptedServer(trickle_http10) as server:
        t0 = time.monotonic()
        with pytest.raises(CloudTimeoutError):
            HTTPCloud(server.url, timeout=1.0).predict(_batch(3))
        assert time.monotonic() - t0 < 2.0
