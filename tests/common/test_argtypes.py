"""The command-line value types and shared options of ``noiseforge._common.argtypes``."""

from __future__ import annotations

import argparse

import pytest

from noiseforge import cli
from noiseforge._common import argtypes

MOVED = (
    "CommandError",
    "UsageError",
    "one_line",
    "int_at_least",
    "seed",
    "number",
    "existing_file",
    "existing_path",
    "folder_problem",
    "output_folder",
    "output_file",
    "languages",
    "_typed",
    "_nearest_existing",
)


@pytest.mark.parametrize("name", MOVED)
def test_the_old_names_in_cli_are_the_moved_objects(name):
    assert getattr(cli, name) is getattr(argtypes, name)


def test_a_value_type_error_is_an_argparse_type_error():
    assert argtypes.int_at_least(2)("5") == 5
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be at least 2 \(pairs\), got 1"):
        argtypes.int_at_least(2, "pairs")("1")
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \[0, 2\*\*63\)"):
        argtypes.seed("-1")
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \(0, 1\]"):
        argtypes.number(0, 1)("0")
    assert argtypes.languages(" de, it ,") == ["de", "it"]


def _options(parser: argparse.ArgumentParser) -> list[tuple]:
    return [
        (a.option_strings, a.dest, a.type, a.default, a.help, a.nargs, type(a))
        for a in parser._actions
    ]


def test_the_shared_options_are_declared_as_by_hand():
    shared = argparse.ArgumentParser()
    argtypes.add_seed(shared)
    argtypes.add_out_folder(shared, "report folder")
    argtypes.add_quiet(shared)
    by_hand = argparse.ArgumentParser()
    by_hand.add_argument(
        "--seed",
        type=argtypes.seed,
        default=None,
        help="reproducible, NOT private noise (default: secret OS randomness)",
    )
    by_hand.add_argument("--out", type=argtypes.output_folder, default=None, help="report folder")
    by_hand.add_argument("--quiet", action="store_true", help="no progress reports")
    assert _options(shared) == _options(by_hand)
    assert shared.parse_args(["--seed", "3", "--quiet"]).seed == 3
    bare = argparse.ArgumentParser()
    argtypes.add_seed(bare, help=None)
    assert bare._actions[-1].help is None
