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
This module also holds the argument validators (``type=`` functions) the commands share.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

#: the ``dest`` of each nested subcommand level, in order (a command's full name is
#: ``noiseforge`` + the values of those that are set)
SUBCOMMAND_DESTS = (
    "command",
    "ldp_command",
    "ledger_command",
    "relevance_command",
    "cloud_command",
)


class UsageError(ValueError):
    """The arguments do not fit together (or the input files do not fit them): exit 2."""


class CommandError(RuntimeError):
    """The command could not finish (missing data, a dead server...): exit 1. The message
    is one line that names the fix."""


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined with '; ' (or a space after a colon)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    out = ""
    for ln in lines:
        out += ln if not out else (" " if out.endswith(":") else "; ") + ln
    return out


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


# ----------------------------------------------------------------------------- validators
# Each returns a ``type=`` function whose ArgumentTypeError argparse reports as a usage
# error (exit 2) before any work starts.


def _typed(name: str, parse: Callable) -> Callable:
    parse.__name__ = name  # argparse names the type in some messages
    return parse


def int_at_least(low: int, why: str = "") -> Callable[[str], int]:
    """A whole number >= ``low`` (``why`` says why, e.g. "superimposition mixes pairs")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number >= {low}, got {text!r}"
            ) from None
        if value < low:
            if why:
                raise argparse.ArgumentTypeError(f"must be at least {low} ({why}), got {value}")
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return _typed("count", parse)


def seed(text: str) -> int:
    """A random seed: a whole number in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a whole number in [0, 2**63), got {text!r}")
    return value


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = True,
    high_open: bool = False,
    allow_inf: bool = False,
    what: str = "",
) -> Callable[[str], float]:
    """A real number in the interval (``low``, ``high``] (openness set by ``low_open`` /
    ``high_open``; ``None``: unbounded); NaN is refused, inf only with ``allow_inf``."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    if low is not None and high is not None:
        bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    else:
        bounds = " and ".join(parts)
    kind = "a number" if allow_inf else "a finite number"
    expected = f"must be {kind} {bounds}".rstrip() + (f" ({what})" if what else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = not math.isnan(value) and (allow_inf or math.isfinite(value))
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        return value

    return _typed("number", parse)


def existing_file(text: str) -> str:
    """A file that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist: check the path")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: give a file")
    return text


def existing_path(text: str) -> str:
    """A file or folder that exists."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist: check the path")
    return text


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be (made into) a folder to write in, or None when it can."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            return f"{p} is a file, not a folder"
        if not os.access(p, os.W_OK | os.X_OK):
            return f"{p} is not writable"
        return None
    anc = _nearest_existing(p)
    if not anc.is_dir():
        return f"cannot create {p}: {anc} is a file"
    if not os.access(anc, os.W_OK | os.X_OK):
        return f"cannot create {p}: {anc} is not writable"
    return None


def output_folder(text: str) -> str:
    """A folder that exists and is writable, or can be created."""
    why = folder_problem(text)
    if why:
        raise argparse.ArgumentTypeError(f"{why}: choose another folder")
    return text


def output_file(*suffixes: str) -> Callable[[str], str]:
    """A file to write (it need not exist yet) in a writable folder, ending in one of
    ``suffixes`` (any, when none are given)."""

    def parse(text: str) -> str:
        path = Path(text)
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{text}: unknown file type {path.suffix or '(none)'!r}; end the name in "
                + ", ".join(suffixes)
            )
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder: give a file name")
        why = folder_problem(path.parent)
        if why:
            raise argparse.ArgumentTypeError(f"cannot write {text}: {why}; choose another path")
        return text

    return _typed("file", parse)


def languages(text: str) -> list[str]:
    """Comma-separated language codes, e.g. ``de,it``."""
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError(
            f"no languages in {text!r}: give codes separated by commas, e.g. de,it"
        )
    return out


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
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    return False


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
            return ldp_command.run(args)
        if args.command == "relevance":
            return relevance_command.run(args)
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
