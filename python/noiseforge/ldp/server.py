"""The cloud model over HTTP: an ASGI app (Starlette) served by uvicorn.

``noiseforge cloud serve`` runs :func:`serve`; tests and experiments run a
:class:`CloudServer` in a background thread. Protocol version 1:

- ``POST /v1/predict``: an ``.npy`` body of float32 rows, each of the model's
  declared input shape (or flattened to one axis) -> an ``.npy`` of float32
  class probabilities, one row per input row;
- ``GET /health`` (or ``/v1/health``): liveness, and ``GET /v1/info``: the
  model's input shape, class count and the server's limits;
- ``GET /openapi.json``: the OpenAPI 3.1 description of all of it.

What protects the server and its other clients:

- the body size is checked against ``max_body_bytes`` from ``Content-Length``
  before a byte of the body is read (413), and while reading a chunked body;
- a client gets ``header_timeout`` seconds for its request line and headers and
  ``body_timeout`` seconds for its body (408 or a closed connection), and an idle
  keep-alive connection is closed after ``keep_alive`` seconds;
- at most ``max_connections`` connections (idle ones included) are served at once
  (beyond, uvicorn's plain-text 503) and at most ``max_queued_rows`` rows wait for
  the model (beyond, a JSON 503 with ``Retry-After``); the listen backlog asks for
  2048 connections (the kernel caps it at ``net.core.somaxconn``), so a burst of
  clients queues instead of being reset; a client that stops reading its answer is
  dropped after ``send_timeout`` seconds, one that leaves takes its rows out of the
  queue;
- concurrent requests are batched into one model call of at most
  ``max_batch_rows`` rows, each waiting request getting an equal share of every call
  (round-robin when more are waiting than a call has rows), so a small request is
  not stuck behind a large one; a request still unanswered after
  ``request_timeout`` seconds gets 503, and on SIGTERM requests in flight get
  ``shutdown_timeout`` seconds to finish (then 503);
- inputs are checked against the declared shape and dtype and must be finite
  (422 naming the expected shape; the model's internals are never shown), and
  answers are checked before they leave (a model failure is a 500 with no
  traceback in the answer; it is logged on the server); rows that make the model
  fail fail only their own request, not the others sharing the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from noiseforge._common.validation import check_int, is_int
from noiseforge.ldp.npy import decode_npy, encode_npy
from noiseforge.ldp.server_limits import ServerLimits

try:
    import h11
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"the cloud server needs starlette and uvicorn ({exc}): pip install 'noiseforge[serve]'"
    ) from None

PROTOCOL = 1
BACKLOG = 2048  # connections the kernel holds before the server accepts them
NPY_TYPES = ("application/octet-stream", "application/x-npy")
log = logging.getLogger("noiseforge.cloud")


class ServedModel:
    """A classifier with the input it declares: rows of ``input_shape`` float32 values.

    ``input_shape`` defaults to the module's own ``input_shape`` attribute, or the
    ``in_features`` of its first ``nn.Linear`` layer. A request may send rows of
    that shape or flattened to one axis. The class count is found by one forward
    pass on a zero row, which also checks that the module runs at all.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        input_shape: Sequence[int] | None = None,
        name: str = "model",
    ) -> None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
        shape = declared_input_shape(module) if input_shape is None else tuple(input_shape)
        if not shape or not all(is_int(n) and n >= 1 for n in shape):
            raise ValueError(
                f"input_shape must be one or more positive integers, got {input_shape!r}"
            )
        shape = tuple(int(n) for n in shape)
        self.module = module.eval()
        self.input_shape: tuple[int, ...] = shape
        self.features = math.prod(shape)
        self.name = str(name)
        try:
            with torch.inference_mode():
                probe = self.module(torch.zeros((1, *shape)))
        except Exception as exc:  # told to the operator starting the server, not to clients
            raise ValueError(
                f"the model fails on one zero row of shape ({', '.join(map(str, shape))}) "
                f"({type(exc).__name__}: {exc}); check input_shape"
            ) from exc
        if not isinstance(probe, torch.Tensor) or probe.dim() != 2 or probe.shape[0] != 1:
            got = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ValueError(
                f"the model must map (N, {', '.join(map(str, shape))}) inputs to (N, classes) "
                f"scores; one zero row gave {got}"
            )
        if probe.shape[1] < 1:
            raise ValueError("the model answers 0 classes for one zero row")
        self.classes = int(probe.shape[1])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities (float32) for the rows of ``x`` (N, *input_shape)."""
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(x))
            return torch.softmax(logits.float(), dim=1).numpy()

    def check(self, x: np.ndarray) -> np.ndarray:
        """``x`` as (N, *input_shape), or ValueError saying what was expected."""
        want = f"(rows, {', '.join(map(str, self.input_shape))})"
        if len(self.input_shape) > 1:
            want += f" or flat (rows, {self.features})"
        if x.shape[1:] == self.input_shape:
            rows = x
        elif x.shape[1:] == (self.features,):
            rows = x.reshape((x.shape[0], *self.input_shape))
        else:
            raise ValueError(f"expected float32 rows of shape {want}, got shape {tuple(x.shape)}")
        if rows.size and not bool(np.isfinite(rows).all()):
            flat = rows.reshape(len(rows), -1)
            row, col = (int(v) for v in np.argwhere(~np.isfinite(flat))[0])
            raise ValueError(
                f"row {row} holds {flat[row, col]} at value {col}: every input value must be finite"
            )
        return rows

    def info(self) -> dict:
        return {
            "model": self.name,
            "protocol": PROTOCOL,
            "input_shape": list(self.input_shape),
            "dtype": "float32",
            "classes": self.classes,
        }


def declared_input_shape(module: torch.nn.Module) -> tuple[int, ...]:
    """The row shape ``module`` declares (``input_shape``), or its first Linear's width."""
    shape = getattr(module, "input_shape", None)
    if shape is None and hasattr(module, "in_channels") and hasattr(module, "size"):
        shape = (int(module.in_channels), int(module.size), int(module.size))
    if shape is None:
        first = next((m for m in module.modules() if isinstance(m, torch.nn.Linear)), None)
        if first is not None and not any(
            isinstance(m, torch.nn.modules.conv._ConvNd) for m in module.modules()
        ):
            shape = (first.in_features,)
    if shape is None:
        raise ValueError(
            f"cannot tell the input shape of {type(module).__name__}: pass input_shape=(...) "
            "(the shape of one row) or give the module an input_shape attribute"
        )
    return tuple(int(n) for n in shape)


class Overloaded(RuntimeError):
    """More rows are waiting than the server takes (503)."""


class _Job:
    __slots__ = ("done", "future", "out", "rows", "sent", "x")

    def __init__(self, x: np.ndarray, classes: int, future: asyncio.Future) -> None:
        self.x, self.future = x, future
        self.rows = len(x)
        self.out = np.empty((self.rows, classes), np.float32)
        self.sent = 0  # rows handed to the model
        self.done = 0  # rows answered


class Batcher:
    """One model call at a time over the rows of all waiting requests.

    Each call takes up to ``max_batch_rows`` rows: first an equal share from every
    waiting request (in arrival order), then what is left from the oldest. The
    model runs in one worker thread, so the event loop keeps accepting requests.
    """

    def __init__(self, model: ServedModel, limits: ServerLimits) -> None:
        self.model, self.limits = model, limits
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="noiseforge-model")
        self._task: asyncio.Task | None = None
        self._inflight: list[tuple[_Job, int, int]] = []
        self.draining = False  # shutting down: new requests are refused
        self.calls = 0  # model calls so far (tests read it)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.fail_all(Overloaded("the server is shutting down; retry"))
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def queued_rows(self) -> int:
        return self._queued

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for ``x``; Overloaded when the queue is full, TimeoutError
        after ``request_timeout``."""
        if len(x) == 0:
            return np.empty((0, self.model.classes), np.float32)
        if self.draining:
            raise Overloaded("the server is shutting down; retry")
        if self._task is None or self._task.done():
            raise ModelFailure("the batcher is not running")
        if self._queued + len(x) > self.limits.max_queued_rows:
            raise Overloaded(
                f"{self._queued} rows are waiting for the model (limit "
                f"{self.limits.max_queued_rows}); retry shortly"
            )
        job = _Job(x, self.model.classes, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._queued += job.rows
        self._wake.set()
        try:
            return await asyncio.wait_for(
                asyncio.shield(job.future), timeout=self.limits.request_timeout
            )
        finally:
            if not job.future.done():  # timed out or cancelled (the client left): drop it
                self._forget(job)

    def _drop(self, job: _Job) -> None:
        """Take ``job``'s unsent rows out of the queue (if it is still queued)."""
        with contextlib.suppress(ValueError):
            self._jobs.remove(job)
            self._queued -= job.rows - job.sent

    def _forget(self, job: _Job) -> None:
        self._drop(job)
        job.future.cancel()

    def _take(self) -> list[tuple[_Job, int, int]]:
        """Rows for the next call: an equal share of the budget for every waiting request
        (at least one row each, in queue order), then the rest from the oldest. Requests
        served and not finished go to the back, so with more requests than rows per call
        each still gets its turn (round-robin)."""
        budget = self.limits.max_batch_rows
        share = max(1, budget // len(self._jobs))
        taken: dict[int, list] = {}
        for fair in (True, False):
            for job in self._jobs:
                if budget == 0:
                    break
                piece = min(job.rows - job.sent, budget, share if fair else budget)
                if piece <= 0:
                    continue
                entry = taken.setdefault(id(job), [job, job.sent, job.sent])
                entry[2] += piece
                job.sent += piece
                budget -= piece
        for job, _, _ in taken.values():
            self._jobs.remove(job)
            if job.sent < job.rows:
                self._jobs.append(job)
        parts = [(job, a, b) for job, a, b in taken.values()]
        self._queued -= sum(b - a for _, a, b in parts)
        return parts

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._queued < self.limits.max_batch_rows:
                await asyncio.sleep(self.limits.batch_wait)  # let concurrent requests join
                if not self._jobs:
                    continue
            parts = self._take()
            self._inflight = parts
            try:
                results = await loop.run_in_executor(self._pool, self._call_parts, parts)
            except Exception:  # a bug of the batcher itself: fail these rows, keep serving
                log.exception("the batcher failed on %d requests", len(parts))
                results = [ModelFailure("internal error")] * len(parts)
            finally:
                self._inflight = []
            for (job, a, b), result in zip(parts, results, strict=True):
                if job.future.done():  # timed out, left, or failed in an earlier call
                    continue
                if isinstance(result, Exception):
                    self._fail(job, result)
                    continue
                job.out[a:b] = result
                job.done += b - a
                if job.done == job.rows:
                    job.future.set_result(job.out)

    def _fail(self, job: _Job, exc: Exception) -> None:
        self._drop(job)
        if not job.future.done():
            job.future.set_exception(exc if isinstance(exc, Overloaded) else ModelFailure(str(exc)))

    def fail_all(self, exc: Exception) -> None:
        """Answer every waiting and running request with ``exc`` (shutting down)."""
        self.draining = True
        for job in [*self._jobs, *(job for job, _, _ in self._inflight)]:
            self._fail(job, exc)

    def _call_parts(self, parts: list[tuple[_Job, int, int]]) -> list:
        """The model on the rows of ``parts`` in one call; a part whose rows make the model
        fail or answer non-finite values fails alone (one client's rows cannot fail
        another's request): on an error the parts are re-run one by one."""
        x = np.concatenate([job.x[a:b] for job, a, b in parts])
        try:
            probs = self._call(x)
        except Exception as exc:
            if len(parts) == 1:
                log.exception("the model failed on a batch of %d rows", len(x))
                return [exc]
            return [self._call_parts([part])[0] for part in parts]
        out, at = [], 0
        for _, a, b in parts:
            rows = probs[at : at + (b - a)]
            at += b - a
            if rows.size and not bool(np.isfinite(rows).all()):
                log.error("the model answered non-finite values for %d rows", b - a)
                out.append(ModelFailure("the model answered non-finite values"))
            else:
                out.append(rows)
        return out

    def _call(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        probs = self.model.forward(x)
        if probs.shape != (len(x), self.model.classes):
            raise ModelFailure(f"the model answered shape {probs.shape} for {len(x)} rows")
        return probs


class ModelFailure(RuntimeError):
    """The model raised or answered something that is not a probability table (500)."""


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limits: ServerLimits) -> bytearray | Response:
    """The whole body, or the error response that ends the request."""
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    # with Transfer-Encoding the body is framed by its chunks, whatever Content-Length says
    declared = None if chunked else request.headers.get("content-length")
    if declared is None and not chunked:
        return _error(411, "send a Content-Length header (or a chunked body) with the .npy rows")
    size = limits.max_body_bytes
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            return _error(400, f"Content-Length must be a byte count, got {declared!r}")
        size = int(declared)
        if size > limits.max_body_bytes:
            return _error(
                413,
                f"the body is {size} bytes; this server takes at most {limits.max_body_bytes} "
                "bytes per request: send fewer rows per request",
                {"Connection": "close"},
            )
    # grown as the bytes arrive (a Content-Length alone reserves no memory)
    buf = bytearray()
    deadline = time.monotonic() + limits.body_timeout
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(request.receive(), timeout=left)
        except (TimeoutError, asyncio.TimeoutError):
            return _error(
                408,
                f"the body did not arrive within {limits.body_timeout:g} s",
                {"Connection": "close"},
            )
        if message["type"] == "http.disconnect":
            return Response(status_code=499)  # nobody is listening
        chunk = message.get("body", b"")
        if len(buf) + len(chunk) > size:
            if declared is not None:  # h11 frames by Content-Length: cannot happen
                return _error(400, "the body is longer than its Content-Length")
            return _error(
                413,
                f"the body exceeds {limits.max_body_bytes} bytes: send fewer rows per request",
                {"Connection": "close"},
            )
        buf += chunk
        if not message.get("more_body", False):
            break
    if declared is not None and len(buf) != size:
        return _error(400, f"the body ended after {len(buf)} of {size} bytes")
    return buf


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is read: nothing else can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(model: ServedModel, limits: ServerLimits | None = None) -> Starlette:
    """The ASGI app serving ``model`` (run it with uvicorn; see :func:`serve`)."""
    limits = limits or ServerLimits()
    per_row = 4 * model.features
    # what fits in the body with its .npy header (at most 256 bytes for any shape here)
    max_rows = min(limits.max_queued_rows, max(0, limits.max_body_bytes - 256) // per_row)
    info = {
        **model.info(),
        "accepts": [[None, *model.input_shape]]
        + ([[None, model.features]] if len(model.input_shape) > 1 else []),
        "limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_rows_per_request": max_rows,
            "max_batch_rows": limits.max_batch_rows,
            "max_queued_rows": limits.max_queued_rows,
            "request_timeout": limits.request_timeout,
        },
    }

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": model.name, "protocol": PROTOCOL})

    async def describe(request: Request) -> Response:
        return JSONResponse(info)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_spec(model, limits))

    async def predict(request: Request) -> Response:
        kind = request.headers.get("content-type", NPY_TYPES[0]).split(";")[0].strip().lower()
        if kind not in NPY_TYPES:
            return _error(415, f"send the rows as an .npy body (Content-Type {NPY_TYPES[0]})")
        body = await _read_body(request, limits)
        if isinstance(body, Response):
            return body
        try:
            x = model.check(decode_npy(body, ndim=None, copy=False))
        except ValueError as exc:
            return _error(422, str(exc))
        if len(x) > info["limits"]["max_rows_per_request"]:
            return _error(
                413,
                f"{len(x)} rows in one request; send at most "
                f"{info['limits']['max_rows_per_request']} per request",
            )
        work = asyncio.ensure_future(request.app.state.batcher.predict(x))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():  # the client left: its rows leave the queue
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            return Response(status_code=499)
        gone.cancel()
        try:
            probs = work.result()
        except Overloaded as exc:
            return _error(503, str(exc), {"Retry-After": "1"})
        except (TimeoutError, asyncio.TimeoutError):
            return _error(
                503, f"no answer within {limits.request_timeout:g} s; retry", {"Retry-After": "1"}
            )
        except ModelFailure:
            return _error(500, "the model failed on this request (see the server's log)")
        return Response(encode_npy(probs), media_type=NPY_TYPES[0])

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.batcher = Batcher(model, limits)
        app.state.batcher.start()
        yield
        await app.state.batcher.stop()

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/health", health, methods=["GET"]),
            Route("/v1/info", describe, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/v1/predict", predict, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def openapi_spec(model: ServedModel, limits: ServerLimits) -> dict:
    """The OpenAPI 3.1 document of the server (what ``/openapi.json`` answers)."""
    error = {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                }
            }
        }
    }

    def err(text: str, plain: bool = False) -> dict:
        """``plain``: uvicorn itself may answer it, as text (malformed HTTP, the
        connection limit, a handler cut off at the end of a shutdown)."""
        content = dict(error["content"])
        if plain:
            content["text/plain"] = {"schema": {"type": "string"}}
        return {"description": text, "content": content}

    busy = err("the server is at its connection or queue limit, or shutting down; retry", True)

    npy = {"schema": {"type": "string", "format": "binary"}}
    health = {
        "type": "object",
        "required": ["status", "model", "protocol"],
        "properties": {
            "status": {"const": "ok"},
            "model": {"type": "string"},
            "protocol": {"type": "integer"},
        },
    }
    shape = ", ".join(map(str, model.input_shape))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"noiseforge cloud: {model.name}",
            "version": str(PROTOCOL),
            "description": "A classifier over HTTP: .npy float32 rows in, class probabilities out.",
        },
        "paths": {
            "/health": {
                "get": {
                    "summary": "liveness",
                    "responses": {
                        "200": {
                            "description": "the server runs",
                            "content": {"application/json": {"schema": health}},
                        },
                        "503": busy,
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "summary": "liveness (protocol 1 path)",
                    "responses": {
                        "200": {
                            "description": "the server runs",
                            "content": {"application/json": {"schema": health}},
                        },
                        "503": busy,
                    },
                }
            },
            "/v1/info": {
                "get": {
                    "summary": "the model's input shape, class count and the server's limits",
                    "responses": {
                        "200": {
                            "description": "facts about the model and the server",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": busy,
                    },
                }
            },
            "/v1/predict": {
                "post": {
                    "summary": "class probabilities for rows of inputs",
                    "description": (
                        f"The body is a NumPy .npy array (version 1-3, little-endian float32, "
                        f"C order, no pickle) of shape (rows, {shape})"
                        + (f" or (rows, {model.features})" if len(model.input_shape) > 1 else "")
                        + f"; the answer is a .npy float32 array (rows, {model.classes}) whose "
                        f"rows sum to 1. At most {limits.max_body_bytes} bytes per request."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {t: npy for t in NPY_TYPES},
                    },
                    "responses": {
                        "200": {
                            "description": "float32 probabilities, one row per input row",
                            "content": {NPY_TYPES[0]: npy},
                        },
                        "400": err(
                            "the HTTP request is malformed (e.g. a bad Content-Length)", True
                        ),
                        "408": err("the headers or the body did not arrive in time"),
                        "411": err("neither a Content-Length nor a chunked body"),
                        "413": err("the body or the row count is over the server's limit"),
                        "415": err("the body is not sent as application/octet-stream"),
                        "422": err("the body is not an .npy array of the declared shape"),
                        "500": err("the model failed on these rows", True),
                        "503": busy,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "this document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request line and headers: a
    client that connects, or starts a request, and then stalls is cut off after
    ``header_timeout`` seconds (uvicorn bounds only idle keep-alive time)."""

    header_timeout = 10.0
    send_timeout = 30.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._arm()

    # A client that stops reading its answer: the socket's buffer fills, writing pauses;
    # past send_timeout the connection is dropped (closing would wait for the flush).
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.send_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:
            self._disarm()  # a request's headers are complete
            if self._waiting_for_headers():  # ...and already answered (pipelined)
                self._arm()
        elif self._waiting_for_headers() and not self.transport.is_closing():
            self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # the keep-alive timer bounds the idle time now
        self._disarm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._waiting_for_headers():
            return
        if self.conn.our_state is h11.IDLE and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            body = json.dumps(
                {"error": f"the request headers did not arrive within {self.header_timeout:g} s"}
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()


def _protocol_class(limits: ServerLimits) -> type:
    return type(
        "CloudProtocol",
        (_Protocol,),
        {"header_timeout": limits.header_timeout, "send_timeout": limits.send_timeout},
    )


class _Server(uvicorn.Server):
    """uvicorn's server whose graceful shutdown answers what it cannot finish: requests
    still waiting for the model when ``shutdown_timeout`` is nearly over get a 503
    (retry elsewhere) instead of being cancelled with no answer."""

    async def shutdown(self, sockets=None) -> None:
        app = self.config.app
        grace = max(0.0, self.config.timeout_graceful_shutdown - 0.5)

        def give_up() -> None:
            batcher = getattr(app.state, "batcher", None)
            if batcher is not None:
                batcher.fail_all(Overloaded("the server is shutting down; retry"))

        timer = asyncio.get_running_loop().call_later(grace, give_up)
        try:
            await super().shutdown(sockets=sockets)
        finally:
            timer.cancel()


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (``port=0``: a free port), or a
    ValueError/OSError that says what to change."""
    port = check_int("port", port, 0, 65535, hint=" (0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r} ({exc}): give an address or name") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): "
            + (
                "choose another --port or stop the program using it"
                if exc.errno == errno.EADDRINUSE
                else "give --host an address of this machine (127.0.0.1, 0.0.0.0) and a free --port"
            )
        ) from None
    sock.listen(BACKLOG)
    return sock


def _config(app, limits: ServerLimits, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=_protocol_class(limits),
        lifespan="on",
        backlog=BACKLOG,
        # uvicorn counts the connection asking too: N connections means a limit of N + 1
        limit_concurrency=limits.max_connections + 1,
        ws="none",
        timeout_keep_alive=limits.keep_alive,
        timeout_graceful_shutdown=limits.shutdown_timeout,
        access_log=False,
        log_level=log_level,
        server_header=False,
    )


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    model: ServedModel,
    host: str = "127.0.0.1",
    port: int = 8765,
    limits: ServerLimits | None = None,
    *,
    log_level: str = "warning",
    on_ready=None,
) -> None:
    """Serve ``model`` until SIGINT/SIGTERM (graceful: requests in flight finish).

    The socket listens before this returns control to uvicorn, so ``on_ready(url)``
    (called then) can tell clients to connect: early connections wait in the backlog.
    """
    limits = limits or ServerLimits()
    sock = bind(host, port)
    server = _Server(_config(create_app(model, limits), limits, log_level))
    if on_ready is not None:
        on_ready(_url(sock))
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it: end with status 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class CloudServer:
    """``model`` served in a background thread (tests, experiments, notebooks).

    ``CloudServer(module)`` takes an ``nn.Module`` (wrapped in a
    :class:`ServedModel`; ``input_shape`` as there) or a ServedModel. Use as a
    context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        model: torch.nn.Module | ServedModel,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "model",
        *,
        input_shape: Sequence[int] | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.model = (
            model if isinstance(model, ServedModel) else ServedModel(model, input_shape, name)
        )
        self.limits = limits or ServerLimits()
        self._sock = bind(host, port)
        self.url = _url(self._sock)
        self.app = create_app(self.model, self.limits)
        self._server = _Server(_config(self.app, self.limits, "error"))
        self._thread: threading.Thread | None = None

    @property
    def batcher(self) -> Batcher:
        return self.app.state.batcher

    def start(self, timeout: float = 30.0) -> CloudServer:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the cloud server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> CloudServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
