"""Shared test set-up.

The Triton interpreter must be switched on before triton is first imported, so
that the ``triton`` backend can run on CPU tensors here (only without a GPU).
"""

from __future__ import annotations

import os

import torch  # does not import triton

# Without a GPU the triton backend runs on CPU tensors under the interpreter; on
# a GPU machine it must run compiled (the interpreter would pass the triton-cuda
# tests without testing compiled code), so the default follows the hardware.
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")

import pytest

# `NOISEFORGE_WHEEL=dist/<wheel> bash scripts/run.sh test` (CI) tests an installed wheel: the
# package under test must then be the installed copy, not the source tree, and no compiler
# may be reachable (the wheel must need none). A broken set-up stops the run at once.
_COMPILERS = ("cc", "c++", "gcc", "g++", "clang", "clang++", "nvcc", "ld", "as", "cmake", "ninja")


def pytest_sessionstart(session):
    if os.environ.get("NOISEFORGE_TEST_INSTALLED", "0") != "1":
        return
    import shutil
    from pathlib import Path

    import noiseforge

    source = Path(__file__).resolve().parents[1] / "python"
    where = Path(noiseforge.__file__).resolve()
    if where.is_relative_to(source):
        raise pytest.UsageError(
            f"NOISEFORGE_TEST_INSTALLED=1 but noiseforge is imported from the source tree "
            f"({where}); install the wheel into a fresh venv (scripts/run.sh with NOISEFORGE_WHEEL)"
        )
    found = {c: path for c in _COMPILERS if (path := shutil.which(c))}
    if found or any(os.environ.get(v) for v in ("CC", "CXX", "CUDACXX")):
        raise pytest.UsageError(
            f"NOISEFORGE_TEST_INSTALLED=1 but compilers are reachable: {found or 'CC/CXX/CUDACXX'}"
            "; run the tests through scripts/run.sh, which hides them"
        )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (`scripts/run.sh test` runs two workers) a module's tests stay on
    one worker, so module fixtures are built once, and every Ray test runs on the same worker
    (they share one session's Ray instance, tests/distributed/conftest.py). A scheduler and
    not `xdist_group` marks: xdist 3.8's loadgroup cannot rename pytest 9.2's node ids."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/distributed" if module.startswith("tests/distributed/") else module

    return ModuleScheduling(config, log)


@pytest.fixture
def tiny_fashion(tmp_path):
    """A generated 40 + 12 image data set in Fashion-MNIST's idx format (random pixels)."""
    import numpy as np

    from tests.support.idx import write_idx

    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 12)):
        write_idx(
            tmp_path / f"{split}-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (n, 28, 28))
        )
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", 2049, np.arange(n) % 10)
    return tmp_path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models train many times faster on one thread when the cores are shared
    (OpenMP workers spin-wait for a busy core); the setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- ledger stores

# A PostgreSQL server for the ledger tests: .ci/run (and `scripts/run.sh test`) start one on
# loopback and export its URL; NOISEFORGE_REQUIRE_POSTGRES=1 turns the skip without one into
# a failure, so CI cannot pass without them.
POSTGRES_URL = os.environ.get("NOISEFORGE_TEST_POSTGRES_URL", "")
REQUIRE_POSTGRES = os.environ.get("NOISEFORGE_REQUIRE_POSTGRES", "0") == "1"


def require_postgres() -> str:
    if not POSTGRES_URL:
        reason = "no PostgreSQL server configured (NOISEFORGE_TEST_POSTGRES_URL is unset)"
        if REQUIRE_POSTGRES:
            pytest.fail(f"NOISEFORGE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return POSTGRES_URL


class LedgerLocation:
    """Where a test's ledger lives: an SQLite file, or a fresh schema of the test server."""

    def __init__(self, kind: str, path: str, name: str | None) -> None:
        self.kind, self.path, self.name = kind, path, name

    def open(self, epsilon_budget=None, delta_budget=None, **kw):
        from noiseforge.ldp import PrivacyLedger

        if self.name is not None:
            kw.setdefault("name", self.name)
        return PrivacyLedger(epsilon_budget, delta_budget, path=self.path, **kw)

    def args(self) -> list[str]:
        """The location as command-line arguments of tests/support/ledger_worker.py."""
        return [self.path, self.name or "-"]


def _postgres_location():
    url = require_postgres()
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield LedgerLocation("postgresql", url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request, tmp_path):
    """One test ledger per store kind (PostgreSQL: a schema dropped afterwards)."""
    if request.param == "sqlite":
        yield LedgerLocation("sqlite", str(tmp_path / "ledger.sqlite"), None)
    else:
        yield from _postgres_location()


@pytest.fixture
def postgres_location():
    """A test ledger in a fresh schema of the test PostgreSQL server."""
    yield from _postgres_location()
