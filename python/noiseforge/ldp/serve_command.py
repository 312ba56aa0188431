"""``noiseforge cloud serve``: a classifier over HTTP (protocol 1, see :mod:`noiseforge.ldp.server`).

``--model fashion-cnn`` serves the Fashion-MNIST CNN (trained once and cached);
``--model package.module:function`` serves what ``function()`` returns, an
``nn.Module`` (its input shape from ``--input-shape``, its ``input_shape``
attribute or its first Linear layer) or a ready ``ServedModel``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys

from noiseforge._common import argtypes

BUILTIN = ("fashion-cnn",)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {port}")
    return port


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(
            f"expected the shape of one input row as positive integers, e.g. 1,28,28; got {text!r}"
        )
    return shape


def _model_spec(text: str) -> str:
    if text in BUILTIN or (":" in text and all(text.split(":", 1))):
        return text
    raise argparse.ArgumentTypeError(
        f"expected {' or '.join(BUILTIN)} or package.module:function, got {text!r}"
    )


def add_arguments(cloud: argparse.ArgumentParser) -> None:
    from noiseforge.ldp.server_limits import ServerLimits

    d = ServerLimits()
    cloud_sub = cloud.add_subparsers(dest="cloud_command", required=True)
    serve = cloud_sub.add_parser(
        "serve",
        help="serve a classifier on a port (protocol 1)",
        description=__doc__.splitlines()[0],
    )
    serve.add_argument(
        "--model",
        default="fashion-cnn",
        type=_model_spec,
        help="fashion-cnn (trained once and cached) or package.module:function returning an "
        "nn.Module (default %(default)s)",
    )
    serve.add_argument(
        "--input-shape", type=_shape, default=None, help="shape of one input row, e.g. 1,28,28"
    )
    serve.add_argument("--name", default=None, help="the model's name in /v1/info")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=8765, help="0: any free port")
    limits = serve.add_argument_group("limits")
    for field, unit in (
        ("max_body_bytes", "bytes per request body"),
        ("max_batch_rows", "rows per model call (concurrent requests share one)"),
        ("batch_wait", "seconds a request waits for others to share its model call"),
        ("max_queued_rows", "rows waiting for the model before 503"),
        ("max_connections", "connections served at once before 503"),
        ("header_timeout", "seconds for a request's headers"),
        ("body_timeout", "seconds for a request's body"),
        ("request_timeout", "seconds from a complete request to its answer before 503"),
        ("keep_alive", "seconds an idle connection stays open"),
        ("send_timeout", "seconds a client may leave its answer unread"),
        ("shutdown_timeout", "seconds requests in flight get to finish on SIGTERM"),
    ):
        whole = isinstance(getattr(d, field), int)
        limits.add_argument(
            "--" + field.replace("_", "-"),
            type=argtypes.int_at_least(1) if whole else argtypes.number(0),
            default=getattr(d, field),
            help=f"{unit} (default %(default)s)",
        )


def load_model(spec: str, input_shape=None, name: str | None = None):
    """The :class:`ServedModel` that ``--model spec`` names."""
    import torch

    from noiseforge.ldp.server import ServedModel

    if spec == "fashion-cnn":
        from noiseforge.ldp.fashion import fashion_cloud_model

        module = fashion_cloud_model(progress=sys.stderr.isatty())
    else:
        module_name, function = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"--model {spec}: cannot import {function!r} from {module_name!r} ({exc}); "
                "check the name and that the module is on PYTHONPATH"
            ) from None
        module = factory()
        if isinstance(module, ServedModel):
            if input_shape is not None or name is not None:
                raise ValueError(
                    f"--model {spec} returns a ready ServedModel, which carries its own input "
                    "shape and name: drop --input-shape/--name, or return the nn.Module"
                )
            return module
        if not isinstance(module, torch.nn.Module):
            raise ValueError(
                f"--model {spec} returned a {type(module).__name__}, not a torch.nn.Module"
            )
    return ServedModel(module, input_shape, name or spec)


def build_cloud_server(args: argparse.Namespace):
    """A :class:`~noiseforge.ldp.server.CloudServer` for ``args`` (tests and notebooks)."""
    from noiseforge.ldp.server import CloudServer

    model = load_model(args.model, getattr(args, "input_shape", None), getattr(args, "name", None))
    return CloudServer(model, host=args.host, port=args.port, limits=_limits(args))


def _limits(args: argparse.Namespace):
    from noiseforge.ldp.server_limits import ServerLimits

    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(ServerLimits)}
    return ServerLimits(**{k: v for k, v in given.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from noiseforge.ldp.server import serve

    model = load_model(args.model, args.input_shape, args.name)

    def ready(url: str) -> None:
        shape = ", ".join(map(str, model.input_shape))
        print(
            f"noiseforge cloud: serving {model.name} (rows of ({shape}) -> {model.classes} "
            f"classes) at {url} (Ctrl-C stops)",
            flush=True,
        )

    try:
        serve(model, args.host, args.port, _limits(args), on_ready=ready)
    except OSError as exc:  # the address: in use, not ours, unreachable
        print(f"noiseforge cloud: error: {exc}", file=sys.stderr)
        return 1
    return 0
