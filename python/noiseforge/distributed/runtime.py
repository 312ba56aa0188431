"""Connecting to Ray, and the facts every noiseforge operator on Ray respects.

* :func:`connect`: the cluster to run on. ``address=None`` uses ``$RAY_ADDRESS``
  when it is set, else starts a local instance on this machine (the embedded
  default). An address where no cluster answers fails at once with one line that
  says how to start one (``ray start --head --num-cpus=N``) or to run locally;
  Ray itself would wait for a minute or more.
* :func:`configure_threads`: torch's intra-op threads -- and with them the native
  kernels' threads, which follow torch's setting -- from the CPUs Ray assigned
  to the current task or actor. Ray reuses worker processes, so every operator
  calls it per task: a reused worker must not keep an earlier task's count.
* Fractional CPU requests (:data:`ACTOR_CPUS`, :data:`TASK_CPUS`): an actor pool
  and the Ray Data tasks that feed it share a node; with whole CPUs, two 1-CPU
  actors and a data task on a 2-CPU node wait for each other forever.
"""

from __future__ import annotations

import math
import os
import socket
import urllib.parse
from typing import Any

#: CPUs each cloud-client or inference actor asks for (several share a core: they
#: mostly wait on the cloud)
ACTOR_CPUS = 0.5
#: CPUs each Ray Data task of noiseforge's operators asks for
TASK_CPUS = 0.5
#: seconds to wait for a cluster's head to accept a connection before giving up
CONNECT_TIMEOUT = 5.0

_HOW = (
    "start one with 'ray start --head --num-cpus=N' (then pass its address, or set "
    "RAY_ADDRESS), or run with --engine local"
)


class RayUnavailableError(ConnectionError):
    """No Ray cluster at the address given (the message says how to start one)."""


def require_ray() -> Any:
    """The ``ray`` module, or ImportError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # the pipelines need Ray Data, not only Ray core
    except ImportError:
        raise ImportError(
            "the ray engine needs Ray Data: pip install 'noiseforge[ray]' (ray[data]>=2.60), "
            "or run with --engine local"
        ) from None
    return ray


def _head(address: str) -> tuple[str, int] | None:
    """(host, port) that a cluster at ``address`` listens on; None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    text = address if "://" in address else f"ray://{address}"
    parts = urllib.parse.urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise RayUnavailableError(
            f"cannot read the Ray address {address!r}: give host:port (e.g. 127.0.0.1:6379), "
            "'auto' for the cluster started on this machine, or " + _HOW
        )
    return parts.hostname, port


def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> str:
    """Connect this process to Ray (once; later calls reuse the connection).

    ``address``: ``None`` -> ``$RAY_ADDRESS`` if set, else a new local instance
    (``num_cpus`` of them, default all); ``"auto"`` -> the cluster started on
    this machine with ``ray start``; ``host:port`` or ``ray://host:port`` -> that
    cluster. Returns a description of the cluster (its CPUs).

    Raises
    ------
    RayUnavailableError
        No cluster answers at the address (within ``timeout`` seconds); the
        one-line message says how to start one.
    ImportError
        Ray Data is not installed.
    """
    ray = require_ray()
    if not ray.is_initialized():
        if address is None:
            address = os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            kwargs["num_cpus"] = num_cpus
        else:
            head = _head(address)
            if head is not None and not _reachable(*head, timeout):
                raise RayUnavailableError(f"no Ray cluster answers at {address}: {_HOW}")
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise RayUnavailableError(
                f"no Ray cluster at {address or 'this machine'} ({_first_line(exc)}): {_HOW}"
            ) from None
    cpus = ray.cluster_resources().get("CPU", 0)
    return f"Ray cluster with {cpus:g} CPUs"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def assigned_cpus() -> float | None:
    """CPUs Ray assigned to the current task or actor; None outside a Ray worker (the
    driver, or no Ray at all)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        ctx = ray.get_runtime_context()
        if ctx.worker.mode != ray.WORKER_MODE:
            return None
        return float(ctx.get_assigned_resources().get("CPU", 1.0))
    except (ImportError, RuntimeError, AttributeError, AssertionError):
        return None


def configure_threads(cpus: float | None = None) -> int:
    """Set torch's (and so the native kernels') CPU threads from ``cpus`` (default: the
    CPUs assigned to the current Ray task or actor), at least 1; returns the count.

    Called at the start of every task of noiseforge's operators, because Ray reuses
    worker processes across tasks and torch keeps whatever count was set last.
    Outside a Ray worker, with ``cpus=None``, the count is left as it is.
    """
    import torch

    if cpus is None:
        cpus = assigned_cpus()
        if cpus is None:
            return torch.get_num_threads()
    n = max(1, math.floor(cpus + 1e-9))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def gather(ray: Any, refs: list) -> list[Any]:
    """``ray.get(refs)``, in order; a failed task raises its own error (a
    BudgetExceededError, a ValueError naming a bad argument), not Ray's wrapper."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
