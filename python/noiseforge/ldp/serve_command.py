"""``noiseforge cloud serve``: a classifier over HTTP (protocol 1)."""

from __future__ import annotations

import argparse


def add_arguments(cloud: argparse.ArgumentParser) -> None:
    cloud_sub = cloud.add_subparsers(dest="cloud_command", required=True)
    serve = cloud_sub.add_parser("serve", help="serve a classifier on a port (protocol 1)")
    serve.add_argument(
        "--model",
        default="fashion-cnn",
        choices=["fashion-cnn"],
        help="the model to serve (trained once and cached)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)


def build_cloud_server(args: argparse.Namespace):
    """The server of ``noiseforge cloud serve`` (not yet serving)."""
    from noiseforge.ldp.fashion import fashion_cloud_model
    from noiseforge.ldp.http import CloudServer

    return CloudServer(fashion_cloud_model(), host=args.host, port=args.port, name=args.model)


def run(args: argparse.Namespace) -> int:
    server = build_cloud_server(args)
    print(f"noiseforge cloud: serving {args.model} at {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0
