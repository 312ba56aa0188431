"""Command-line interface: ``noiseforge <command>``.

Commands: ``info`` (build and backend table), ``demo`` (the main job on
embedded default data), ``ldp run|sweep`` (LDPKiT experiments), ``ldp ledger
show|verify|spent|import`` (a shared privacy ledger), ``relevance
augment|mine|filter|train|evaluate|run`` (the relevance data engine) and
``cloud serve`` (a model over HTTP). Each command lives in its own module, which adds its
arguments and runs; later systems add their subcommands here.

Every error is one line on stderr that names the problem and the fix. Exit status:
0 done, 1 the command could not finish (missing data or packages, an unreachable
server, a failed translation, an OS error), 2 a usage error (bad arguments, or input
files that do not fit them), 130 interrupted (Ctrl-C). A traceback means a bug.
The argument validators (``type=`` functions), the options several commands share and
the errors a command raises live in :mod:`noiseforge._common.argtypes` and are
re-exported here.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import select
import sys

from noiseforge._common.argtypes import (
    NOISE_SEED_HELP,
    CommandError,
    UsageError,
    _nearest_existing,  # noqa: F401 -- importable from here, as before the move
    _typed,  # noqa: F401
    add_out_folder,
    add_quiet,
    add_seed,
    existing_file,
    existing_path,
    folder_problem,
    int_at_least,
    languages,
    number,
    one_line,
    output_file,
    output_folder,
    seed,
)

__all__ = [
    "NOISE_SEED_HELP",
    "SUBCOMMAND_DESTS",
    "CommandError",
    "Parser",
    "UsageError",
    "add_out_folder",
    "add_quiet",
    "add_seed",
    "existing_file",
    "existing_path",
    "folder_problem",
    "int_at_least",
    "languages",
    "main",
    "number",
    "one_line",
    "output_file",
    "output_folder",
    "seed",
]

#: the ``dest`` of each nested subcommand level, in order (a command's full name is
#: ``noiseforge`` + the values of those that are set)
SUBCOMMAND_DESTS = (
    "command",
    "ldp_command",
    "ledger_command",
    "relevance_command",
    "cloud_command",
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: what (see 'prog --help')``, exit 2.

    ``argument --limit: must be >= 1, got 0`` (what a ``type=`` validator says) reads
    ``--limit must be >= 1, got 0``; a missing subcommand names the choices.
    Subparsers are of this class too, so every command gets it.
    """

    def error(self, message: str):  # type: ignore[override]
        m = re.fullmatch(r"argument ([^:]+): (.*)", message, flags=re.S)
        if m:
            option, rest = m.group(1).split("/")[-1], m.group(2)
            message = f"{option} {rest}" if rest.startswith("must ") else f"{option}: {rest}"
        m = re.fullmatch(r"the following arguments are required: (.*)", message, flags=re.S)
        if m:
            for action in self._actions:
                if isinstance(action, argparse._SubParsersAction) and action.dest == m.group(1):
                    message = f"choose a command: {', '.join(action.choices)}"
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- main


def _command_name(args: argparse.Namespace) -> str:
    names = [getattr(args, d, None) for d in SUBCOMMAND_DESTS]
    return " ".join(["noiseforge", *(n for n in names if isinstance(n, str) and n)])


def _deepest_parser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The (sub)parser of the subcommand that ``args`` names."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if not isinstance(chosen, str) or chosen not in subs[0].choices:
            return parser
        parser = subs[0].choices[chosen]


def _os_error(exc: OSError) -> str:
    """An OS error as one line with what to do."""
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        what = f"{exc.filename}: {what}"
    fixes = {
        errno.EACCES: "check its permissions or choose another path",
        errno.EPERM: "check its permissions or choose another path",
        errno.EROFS: "choose a path on a writable file system",
        errno.ENOSPC: "free some disk space and run again",
        errno.ENOTDIR: "a part of the path is a file: choose another path",
        errno.EEXIST: "a part of the path is a file: choose another path",
        errno.EISDIR: "it is a folder: give a file",
        errno.EADDRINUSE: "choose another --port (or stop what holds this one)",
        errno.ENOENT: "check the path",
    }
    fix = fixes.get(exc.errno)
    return f"{what}; {fix}" if fix else what


def _stdout_is_broken() -> bool:
    """Whether standard output is a pipe whose reader went away (POLLERR on its write end;
    a second flush cannot tell: the first failed one may have emptied the buffer)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno (captured), or no poll
        return False


def _ldp_engine(args: argparse.Namespace):
    """The engine of ``noiseforge ldp run|sweep --engine ray`` (None: the local one).
    Built here, where the command line composes the layers: ``noiseforge.distributed``
    builds on ``ldp``, so ``ldp`` cannot import it."""
    if getattr(args, "engine", "local") != "ray":
        return None
    from noiseforge.distributed.engine import ldp_engine

    return ldp_engine(args.ray_address)


def _relevance_engine(args: argparse.Namespace):
    """Where ``noiseforge relevance augment|mine|filter|run --engine ray`` runs its data
    steps (None: the local engine). Built here for the same reason as
    :func:`_ldp_engine`: ``noiseforge.distributed`` builds on ``relevance``, so
    ``relevance`` cannot import it."""
    if getattr(args, "engine", "local") != "ray":
        return None
    from noiseforge.distributed.engine import relevance_engine

    return relevance_engine(args.ray_address)


def main(argv: list[str] | None = None) -> int:
    """Run ``noiseforge`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    name = ["noiseforge"]  # the full command name, once the arguments are parsed
    try:
        return _main(argv, name)
    except KeyboardInterrupt:
        print(
            f"{name[0]}: interrupted (Ctrl-C)",
            file=sys.stderr,
            flush=True,
        )
        return 130


def _main(argv: list[str] | None, command_name: list[str]) -> int:
    from noiseforge import _progress, demo
    from noiseforge.data import DatasetNotFoundError
    from noiseforge.ldp import LedgerStoreError, serve_command
    from noiseforge.ldp import command as ldp_command
    from noiseforge.ldp.cloud import CloudQueryError
    from noiseforge.ldp.ledger.errors import BudgetExceededError
    from noiseforge.ldp.tasks import MissingTaskDataError
    from noiseforge.ops import BackendUnavailableError
    from noiseforge.relevance import command as relevance_command
    from noiseforge.relevance.translate import TranslationUnavailable

    parser = Parser(prog="noiseforge", description=__doc__.splitlines()[0])
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
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the subcommand that was given them, not by `noiseforge`
            _deepest_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else 2
    name = command_name[0] = _command_name(args)

    def fail(message: str, status: int) -> int:
        print(f"{name}: error: {one_line(message)}", file=sys.stderr, flush=True)
        return status

    try:
        try:
            _progress.check_environment()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.command == "info":
            from noiseforge.info import info_text

            print(info_text())
            return 0
        if args.command == "ldp":
            return ldp_command.run(args, engine=_ldp_engine(args))
        if args.command == "relevance":
            return relevance_command.run(args, engine=_relevance_engine(args))
        if args.command == "cloud":
            return serve_command.run(args)
        return demo.run(args)
    except UsageError as exc:
        return fail(f"{exc} (see '{name} --help')", 2)
    except (
        CommandError,
        DatasetNotFoundError,
        MissingTaskDataError,
        TranslationUnavailable,
        BackendUnavailableError,
        CloudQueryError,
        LedgerStoreError,
        BudgetExceededError,
        ImportError,
    ) as exc:
        return fail(str(exc) or type(exc).__name__, 1)
    except (ValueError, FileNotFoundError) as exc:  # a value or a path given to the command
        if isinstance(exc, OSError) and exc.filename is not None:  # "[Errno 2] ...: 'x'"
            return fail(_os_error(exc), 2)
        return fail(str(exc) or type(exc).__name__, 2)
    except OSError as exc:  # includes an unreachable cloud (ConnectionError)
        if isinstance(exc, BrokenPipeError) and _stdout_is_broken():
            # the reader of our output went away (`noiseforge ... | head`): stop quietly
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return 1
        return fail(_os_error(exc), 1)


if __name__ == "__main__":
    sys.exit(main())
