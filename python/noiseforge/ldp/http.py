"""The client of the cloud over HTTP (the server: :mod:`noiseforge.ldp.server`).

Protocol (version 1): ``POST /v1/predict`` with a NumPy ``.npy`` body (float32,
rows of inputs; pickles are refused) answers an ``.npy`` of float32 class
probabilities; ``GET /v1/health`` and ``GET /v1/info`` answer JSON facts about
the model. The client is a :class:`CloudModel`, so it sends only released
(noised) data.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse

import torch

from noiseforge._common.validation import is_int
from noiseforge.ldp.cloud import (
    CloudModel,
    CloudRequestError,
    CloudTimeoutError,
    CloudUnavailableError,
)
from noiseforge.ldp.npy import decode_npy, encode_npy


class HTTPCloud(CloudModel):
    """Client of a :class:`~noiseforge.ldp.server.CloudServer` (or any server speaking
    protocol 1).

    ``timeout`` bounds each whole exchange (connect, send, the complete answer),
    not each socket read: a server that trickles its answer is cut off at the
    deadline. Failures are typed for :func:`~noiseforge.ldp.query_cloud`:
    CloudUnavailableError / CloudTimeoutError (connection refused or reset, a
    truncated or malformed body, a 5xx/429/503 answer: retried) and
    CloudRequestError (any other 4xx: the request itself is wrong). Answers
    larger than ``max_response_bytes`` are refused.
    """

    def __init__(self, url: str, timeout: float = 60.0, max_response_bytes: int = 1 << 30) -> None:
        parts = urllib.parse.urlsplit(url)
        try:
            parts.port  # noqa: B018 -- parsing it raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"url {url!r} has an invalid port ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/prefix], got {url!r}")
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.max_response_bytes = int(max_response_bytes)
        self._parts = parts

    def health(self) -> dict:
        """The server's ``/v1/health`` answer (``status``, ``model``, ``protocol``)."""
        return self._json("/v1/health")

    def info(self) -> dict:
        """The server's ``/v1/info``: the model's input shape and classes, the limits."""
        return self._json("/v1/info")

    def _body_limit(self) -> int | None:
        """The server's ``max_body_bytes`` from /v1/info (asked within 5 s at most), or None."""
        probe = HTTPCloud(self.url, timeout=min(self.timeout, 5.0))
        try:
            limit = probe.info().get("limits", {}).get("max_body_bytes")
        except (CloudUnavailableError, CloudRequestError, AttributeError):
            return None
        return int(limit) if is_int(limit) else None  # JSON true is no byte count

    def _json(self, path: str) -> dict:
        status, body = self._exchange("GET", path, None, {})
        if status != 200:
            raise CloudUnavailableError(f"GET {path} answered {status}")
        try:
            return json.loads(body)
        except ValueError:
            raise CloudUnavailableError(f"GET {path} answered no JSON") from None

    def _predict(self, data: torch.Tensor) -> torch.Tensor:
        body = encode_npy(data.detach().cpu().float().numpy())
        headers = {"Content-Type": "application/octet-stream"}
        try:
            status, answer = self._exchange("POST", "/v1/predict", body, headers)
        except CloudTimeoutError:
            raise  # the deadline is spent: no second exchange
        except CloudUnavailableError:
            # A server refusing a body over its limit may close before reading it, so the
            # client sees a reset instead of the 413: ask the server what it takes.
            limit = self._body_limit() if len(body) > 1 << 20 else None
            if limit is not None and len(body) > limit:
                raise CloudRequestError(
                    f"the request is {len(body)} bytes; the cloud takes at most {limit} bytes "
                    "per request: send fewer rows per request (query_cloud batch_size)"
                ) from None
            raise
        if status != 200:
            detail = answer[:500].decode(errors="replace")
            if status in (408, 429) or status >= 500:
                raise CloudUnavailableError(f"the cloud answered {status}: {detail}")
            raise CloudRequestError(f"the cloud rejected the request ({status}): {detail}")
        try:
            return torch.from_numpy(decode_npy(answer))
        except ValueError as exc:
            raise CloudUnavailableError(
                f"the cloud's answer is not a valid array ({exc})"
            ) from None

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict
    ) -> tuple[int, bytes]:
        """(status, body) of one request, all of it within ``timeout`` seconds."""
        p = self._parts
        kind = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        conn = kind(p.hostname, p.port, timeout=self.timeout)
        deadline = time.monotonic() + self.timeout
        cut = threading.Event()

        # A duplicate of the connection's socket, once there is one: http.client closes
        # its own socket object when the answer ends the connection (the response still
        # reads through it), and shutting down the duplicate cuts that connection too.
        opened: list[socket.socket] = []

        def cut_off() -> None:  # the deadline: end the exchange whatever it is waiting for
            cut.set()
            for sock in opened:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        def remaining() -> float:
            left = deadline - time.monotonic()
            if cut.is_set() or left <= 0:
                raise CloudTimeoutError(f"no complete answer within {self.timeout:g} s")
            return left

        watchdog = threading.Timer(self.timeout, cut_off)
        watchdog.daemon = True
        watchdog.start()
        try:
            # Connecting (name lookup included) cannot be cut by the watchdog before a
            # socket exists: check the deadline once it does, then before every read.
            conn.connect()
            # (os.dup, not socket.dup: an SSL socket cannot be duplicated, its descriptor can)
            opened.append(socket.socket(fileno=os.dup(conn.sock.fileno())))
            conn.sock.settimeout(remaining())
            conn.request(method, p.path.rstrip("/") + path, body=body, headers=headers)
            conn.sock.settimeout(remaining())
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            if length is not None and (
                not length.isdigit() or int(length) > self.max_response_bytes
            ):
                raise CloudUnavailableError(
                    f"the cloud announced an answer of {length} bytes (limit "
                    f"{self.max_response_bytes}); raise max_response_bytes or lower batch_size"
                )
            chunks, size = [], 0
            while True:
                remaining()  # past the deadline: stop (a blocked read is cut by the watchdog)
                piece = resp.read(1 << 16)
                if not piece:
                    break
                size += len(piece)
                if size > self.max_response_bytes:
                    raise CloudUnavailableError(
                        f"the cloud's answer exceeds {self.max_response_bytes} bytes"
                    )
                chunks.append(piece)
            if cut.is_set():
                raise CloudTimeoutError(f"no complete answer within {self.timeout:g} s")
            data = b"".join(chunks)
            if length is not None and len(data) != int(length):
                raise CloudUnavailableError(
                    f"the answer was cut short ({len(data)} of {length} bytes)"
                )
            return resp.status, data
        except CloudUnavailableError:  # CloudTimeoutError included
            raise
        except (http.client.HTTPException, OSError, ValueError) as exc:
            if cut.is_set() or time.monotonic() >= deadline:
                raise CloudTimeoutError(
                    f"no complete answer within {self.timeout:g} s ({type(exc).__name__})"
                ) from None
            raise CloudUnavailableError(
                f"{method} {path} failed: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            watchdog.cancel()
            conn.close()
            for sock in opened:
                sock.close()
