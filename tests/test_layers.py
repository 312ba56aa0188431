"""The package's layers, read from its import statements: the shared lower layer imports
no system, the ops import neither system nor the index, the two systems do not import
each other, and no two subpackages import each other (no cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import noiseforge

# The package under test: the source tree's, or the installed wheel's (NOISEFORGE_WHEEL).
PACKAGE = Path(noiseforge.__file__).resolve().parent


def _layer(module: str) -> str:
    """``noiseforge.ops.knn_topk`` -> ``ops``; top-level modules are their own layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> dict[str, set[str]]:
    """layer -> the noiseforge layers its modules import (function-level imports too)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        layer = _layer(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module + "." + a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:
                continue  # relative imports stay inside their own subpackage
            for name in names:
                if name.startswith("noiseforge."):
                    target = _layer(name)
                    if target != layer:
                        graph.setdefault(layer, set()).add(target)
    return graph


GRAPH = _imports()
SYSTEMS = {"ldp", "relevance"}


def test_the_shared_lower_layer_imports_only_the_native_module():
    assert GRAPH.get("_common", set()) <= {"_native"}, GRAPH.get("_common")


@pytest.mark.parametrize("layer", ["ops", "reference", "kernels", "index"])
def test_lower_layers_import_no_system(layer):
    assert not GRAPH.get(layer, set()) & (SYSTEMS | {"demo", "cli"}), GRAPH.get(layer)


def test_ops_do_not_import_the_index():
    assert "index" not in GRAPH.get("ops", set())


def test_the_systems_do_not_import_each_other():
    assert "relevance" not in GRAPH.get("ldp", set())
    assert "ldp" not in GRAPH.get("relevance", set())


def test_no_two_subpackages_import_each_other():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    cycles = sorted(
        (a, b)
        for a in packages
        for b in GRAPH.get(a, set())
        if b in packages and a < b and a in GRAPH.get(b, set())
    )
    assert not cycles, cycles


@pytest.mark.parametrize("layer", sorted(SYSTEMS | {"demo"}))
def test_no_system_imports_the_command_line(layer):
    """The commands' value types and errors live in ``_common.argtypes``: ``cli`` imports
    the systems' command modules, never the other way round."""
    assert "cli" not in GRAPH.get(layer, set()), GRAPH.get(layer)


def test_test_modules_share_helpers_only_through_tests_support():
    """A helper two test files need lives in ``tests/support``: no test module imports
    another test module or a conftest (pytest would collect its tests twice)."""
    tests = Path(__file__).resolve().parent
    wrong = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("tests.") and not name.startswith("tests.support"):
                    wrong.append(f"{path.relative_to(tests)}: {name}")
    assert not wrong, wrong
