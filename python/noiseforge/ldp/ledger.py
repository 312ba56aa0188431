"""The privacy ledger: what each private record has spent, and a hard budget.

Every release of a record with eps-LDP noise (layer 1 of LDPKiT) is charged
here; post-processing of released data (layer 2: more noise, mixing, querying
the cloud, training) is free and is never charged. Spending composes by basic
composition: a record released with (eps_1, delta_1), ..., (eps_n, delta_n) has
spent (sum eps_i, sum delta_i). A charge that would take any record past the
budget is refused as a whole, before any noise is drawn.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


class BudgetExceededError(RuntimeError):
    """A release would take a record past the ledger's budget."""


@dataclass(frozen=True)
class Release:
    """One charged release: which records, at what cost, and how."""

    records: list[int]
    epsilon: float
    delta: float
    mechanism: str
    note: str
    time: float


class PrivacyLedger:
    """Per-record privacy accounting with a budget.

    Parameters
    ----------
    epsilon_budget:
        Largest total epsilon any record may spend (> 0, may be ``math.inf``).
    delta_budget:
        Largest total delta (0 allows only pure-DP mechanisms).
    path:
        Optional JSON-lines journal. Existing entries are replayed on creation
        and every accepted release is appended, so the budget survives restarts.
    """

    def __init__(
        self,
        epsilon_budget: float,
        delta_budget: float = 0.0,
        path: str | os.PathLike | None = None,
    ) -> None:
        if not (isinstance(epsilon_budget, int | float) and epsilon_budget > 0):
            raise ValueError(f"epsilon_budget must be > 0, got {epsilon_budget!r}")
        if not (isinstance(delta_budget, int | float) and 0 <= delta_budget < 1):
            raise ValueError(f"delta_budget must be in [0, 1), got {delta_budget!r}")
        self.epsilon_budget = float(epsilon_budget)
        self.delta_budget = float(delta_budget)
        self._eps: dict[int, float] = {}
        self._delta: dict[int, float] = {}
        self._releases: list[Release] = []
        self._lock = threading.Lock()
        self.path = Path(path) if path is not None else None
        if self.path is not None and self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    entry = Release(**json.loads(line))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{self.path}:{n}: not a ledger entry ({exc})") from None
                self._apply(entry)

    # ------------------------------------------------------------------ queries
    def spent(self, record: int) -> tuple[float, float]:
        """(epsilon, delta) spent so far by ``record``."""
        return self._eps.get(int(record), 0.0), self._delta.get(int(record), 0.0)

    def remaining(self, record: int) -> tuple[float, float]:
        eps, delta = self.spent(record)
        return self.epsilon_budget - eps, self.delta_budget - delta

    @property
    def releases(self) -> list[Release]:
        return list(self._releases)

    # ------------------------------------------------------------------ charging
    def charge(
        self, records, epsilon: float, delta: float = 0.0, *, mechanism: str = "", note: str = ""
    ) -> Release:
        """Charge every record in ``records`` (eps, delta), or refuse all of them.

        Raises BudgetExceededError naming the first record that would exceed the
        budget (nothing is charged then), ValueError for a negative or NaN cost or
        a record listed twice in one release.
        """
        ids = np.asarray(records).reshape(-1)
        if ids.size and ids.dtype.kind not in "iu":
            raise TypeError(f"records must be integer ids, got dtype {ids.dtype}")
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("a release lists a record twice; charge each record once per release")
        for name, value in (("epsilon", epsilon), ("delta", delta)):
            if not (isinstance(value, int | float) and value >= 0 and not math.isnan(value)):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        with self._lock:
            for r in ids:
                eps, dlt = self.spent(r)
                if (
                    eps + epsilon > self.epsilon_budget * (1 + 1e-12)
                    or dlt + delta > self.delta_budget * (1 + 1e-12) + 1e-300
                ):
                    raise BudgetExceededError(
                        f"record {r} has spent epsilon={eps:.6g}, delta={dlt:.3g}; releasing it "
                        f"again at epsilon={epsilon:.6g}, delta={delta:.3g} would exceed the "
                        f"budget ({self.epsilon_budget:.6g}, {self.delta_budget:.3g}). "
                        "Reuse the released (noised) data instead: post-processing is free."
                    )
            entry = Release(ids, float(epsilon), float(delta), mechanism, note, time.time())
            self._apply(entry)
            if self.path is not None:
                with open(self.path, "a") as f:
                    f.write(json.dumps(asdict(entry)) + "\n")
            return entry

    def _apply(self, entry: Release) -> None:
        for r in entry.records:
            self._eps[r] = self._eps.get(r, 0.0) + entry.epsilon
            self._delta[r] = self._delta.get(r, 0.0) + entry.delta
        self._releases.append(entry)
