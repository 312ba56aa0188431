"""What a cloud server accepts and how long it waits (:class:`ServerLimits`).

Apart from :mod:`noiseforge.ldp.server` so that the command line can describe the limits
without the ``serve`` extra (Starlette, uvicorn) installed.
"""

from __future__ import annotations

import dataclasses
import math

from noiseforge._common.validation import is_int


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one server accepts and how long it waits. Every field must be > 0."""

    #: bytes per request body (a Fashion-MNIST row is 3,136 bytes: 64 MiB ~ 21k rows)
    max_body_bytes: int = 64 << 20
    #: rows per model call (concurrent requests share a call)
    max_batch_rows: int = 1024
    #: how long the first waiting request waits for others to fill a call, seconds
    batch_wait: float = 0.002
    #: rows waiting for the model, all requests together; more is answered 503
    max_queued_rows: int = 1 << 17
    #: connections served at once (uvicorn answers 503 beyond)
    max_connections: int = 1024
    #: seconds for the request line and headers
    header_timeout: float = 10.0
    #: seconds to receive a whole body once the headers are in
    body_timeout: float = 30.0
    #: seconds from a complete body to its answer
    request_timeout: float = 120.0
    #: seconds an idle keep-alive connection stays open
    keep_alive: float = 5.0
    #: seconds a client may take to read its answer once the server waits on it
    send_timeout: float = 30.0
    #: seconds requests in flight get to finish on SIGTERM; the rest are answered 503
    shutdown_timeout: float = 30.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value <= 0:
                raise ValueError(f"ServerLimits.{field.name} must be a number > 0, got {value!r}")
            if field.type == "int" and not is_int(value):
                raise ValueError(f"ServerLimits.{field.name} must be an integer, got {value!r}")
