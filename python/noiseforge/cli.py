"""Command-line interface: ``noiseforge <command>``.

Commands: ``info`` (build and backend table), ``demo`` (the main job on
embedded default data), ``ldp run|sweep`` (LDPKiT experiments), ``ldp ledger
show|verify|spent|import`` (a shared privacy ledger), ``relevance
augment|mine|filter|train|evaluate|run`` (the relevance data engine) and
``cloud serve`` (a model over HTTP). Each command lives in its own module, which adds its
arguments and runs; later systems add their subcommands here.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from noiseforge import demo
    from noiseforge.data import DatasetNotFoundError
    from noiseforge.ldp import LedgerStoreError, serve_command
    from noiseforge.ldp import command as ldp_command
    from noiseforge.ops import BackendUnavailableError
    from noiseforge.relevance import command as relevance_command
    from noiseforge.relevance.translate import TranslationUnavailable

    parser = argparse.ArgumentParser(prog="noiseforge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and the backend table")
    demo.add_arguments(sub.add_parser("demo", help="run the main job on embedded default data"))
    ldp_command.add_arguments(
        sub.add_parser("ldp", help="LDPKiT vs standard eps-LDP: one epsilon (run) or a sweep")
    )
    relevance_command.add_arguments(
        sub.add_parser(
            "relevance", help="the multilingual relevance data engine: steps or the whole ablation"
        )
    )
    serve_command.add_arguments(sub.add_parser("cloud", help="the LDPKiT cloud model over HTTP"))
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            from noiseforge.info import info_text

            print(info_text())
            return 0
        if args.command == "ldp":
            return ldp_command.run(args)
        if args.command == "relevance":
            return relevance_command.run(args)
        if args.command == "cloud":
            return serve_command.run(args)
        return demo.run(args)
    except (
        DatasetNotFoundError,
        FileNotFoundError,
        BackendUnavailableError,
        TranslationUnavailable,
        ImportError,
        LedgerStoreError,
        ValueError,
        TypeError,
    ) as exc:
        print(f"noiseforge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
