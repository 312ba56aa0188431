"""What the command-line modules share: the argparse value types (``type=`` functions),
the options several commands declare alike, and the two errors a command raises.

A value type's :class:`argparse.ArgumentTypeError` is reported by argparse as a usage
error (exit 2) before any work starts; :class:`UsageError` (exit 2) and
:class:`CommandError` (exit 1) are what a command raises once it runs. ``noiseforge.cli``
turns all of them into one line on stderr and re-exports every name here.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


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


# ----------------------------------------------------------------------------- value types


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


# ----------------------------------------------------------------------------- shared options
# Options that several commands declare alike, declared once here so that their names,
# types, defaults and help texts cannot drift apart.

#: the help of a ``--seed`` that makes noise reproducible (``ldp run|sweep``, ``demo``)
NOISE_SEED_HELP = "reproducible, NOT private noise (default: secret OS randomness)"


def add_seed(parser: argparse.ArgumentParser, help: str | None = NOISE_SEED_HELP) -> None:
    """``--seed N`` (a :func:`seed`, default None: fresh randomness); ``help=None``
    declares it without a help text."""
    parser.add_argument("--seed", type=seed, default=None, help=help)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress reports."""
    parser.add_argument("--quiet", action="store_true", help="no progress reports")


def add_out_folder(parser: argparse.ArgumentParser, help: str) -> None:
    """``--out FOLDER`` (an :func:`output_folder`, default None: the command's own)."""
    parser.add_argument("--out", type=output_folder, default=None, help=help)


ENGINES = ("local", "ray")


def add_engine(parser: argparse.ArgumentParser, ray_does: str) -> None:
    """``--engine local|ray`` and ``--ray-address``; ``ray_does`` says what the Ray
    engine runs for this command."""
    parser.add_argument(
        "--engine",
        default="local",
        choices=ENGINES,
        help=f"local: this process (default); ray: {ray_does} (pip install 'noiseforge[ray]')",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="HOST:PORT",
        help="the Ray cluster of --engine ray (default: $RAY_ADDRESS, else a local Ray "
        "instance on this machine); 'auto' for the cluster 'ray start' began here",
    )


def check_engine(args: argparse.Namespace, engine: object, from_python: str) -> None:
    """The engine flags agree, and a non-local engine was built (by the command line,
    or passed from Python: ``from_python`` names the function that builds it)."""
    chosen = getattr(args, "engine", "local")
    if getattr(args, "ray_address", None) and chosen != "ray":
        raise UsageError("--ray-address needs --engine ray")
    if chosen != "local" and engine is None:
        raise UsageError(
            f"--engine {chosen} is set up by the noiseforge command line; from Python, "
            f"pass engine= ({from_python})"
        )
