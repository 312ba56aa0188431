"""The cloud over HTTP: ``noiseforge cloud serve`` and its client.

Protocol (version 1): ``POST /v1/predict`` with a NumPy ``.npy`` body (float32,
rows of inputs; pickles are refused) answers an ``.npy`` of float32 class
probabilities; ``GET /v1/health`` answers JSON facts about the model. The
client is a :class:`CloudModel`, so it sends only released (noised) data.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch

from noiseforge.ldp.cloud import CloudModel, InProcessCloud

MAX_BODY = 256 << 20  # bytes per request


def _to_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class CloudServer:
    """Serves a PyTorch classifier on ``host:port`` (``port=0`` picks a free port).

    Use as a context manager or call :meth:`start` / :meth:`stop`; the server
    runs in a background thread and handles requests concurrently.
    """

    def __init__(
        self, module: torch.nn.Module, host: str = "127.0.0.1", port: int = 0, name: str = "model"
    ) -> None:
        self.cloud = InProcessCloud(module)
        self.name = name
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet by default
                pass

            def _send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, code: int, message: str) -> None:
                self._send(code, json.dumps({"error": message}).encode(), "application/json")

            def do_GET(self) -> None:
                if self.path != "/v1/health":
                    return self._error(404, f"no such endpoint {self.path}")
                self._send(
                    200,
                    json.dumps({"model": server.name, "protocol": 1}).encode(),
                    "application/json",
                )

            def do_POST(self) -> None:
                if self.path != "/v1/predict":
                    return self._error(404, f"no such endpoint {self.path}")
                length = int(self.headers.get("Content-Length", "0"))
                if length <= 0 or length > MAX_BODY:
                    return self._error(413, f"body must be 1..{MAX_BODY} bytes, got {length}")
                try:
                    x = _from_npy(self.rfile.read(length))
                    if x.dtype != np.float32 or x.ndim < 2:
                        raise ValueError(f"expected float32 rows, got {x.dtype} {x.shape}")
                    with lock, torch.no_grad():
                        probs = server.cloud._predict(torch.from_numpy(x))
                except (ValueError, RuntimeError) as exc:
                    return self._error(400, str(exc))
                self._send(
                    200, _to_npy(probs.numpy().astype(np.float32)), "application/octet-stream"
                )

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> CloudServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> CloudServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class HTTPCloud(CloudModel):
    """Client of a :class:`CloudServer` (or any server speaking protocol 1)."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/v1/health", timeout=self.timeout) as r:
            return json.loads(r.read())

    def _predict(self, data: torch.Tensor) -> torch.Tensor:
        body = _to_npy(data.detach().cpu().float().numpy())
        req = urllib.request.Request(
            self.url + "/v1/predict",
            data=body,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return torch.from_numpy(_from_npy(r.read()))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            if exc.code < 500:  # our request is wrong: retrying will not help
                raise ValueError(f"the cloud rejected the request ({exc.code}): {detail}") from None
            raise
