"""Command-line interface: ``noiseforge <command>``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="noiseforge")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and the backend table")
    args = parser.parse_args(argv)
    if args.command == "info":
        from noiseforge.info import info_text

        print(info_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
