"""Command-line interface: ``noiseforge <command>``.

Commands: ``info`` (build and backend table) and ``demo`` (the main job on
embedded default data). Each command lives in its own module, which adds its
arguments and runs; later systems add their subcommands here.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from noiseforge import demo
    from noiseforge.data import DatasetNotFoundError
    from noiseforge.ops import BackendUnavailableError

    parser = argparse.ArgumentParser(prog="noiseforge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and the backend table")
    demo.add_arguments(sub.add_parser("demo", help="run the main job on embedded default data"))
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            from noiseforge.info import info_text

            print(info_text())
            return 0
        return demo.run(args)
    except (DatasetNotFoundError, BackendUnavailableError, ValueError, TypeError) as exc:
        print(f"noiseforge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
