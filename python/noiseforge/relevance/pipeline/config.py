"""What a relevance run is asked to do: :class:`RunConfig`, the per-task
:class:`Strategies`, the names of the ablation's systems, and :class:`RunResult`,
what it hands back."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

STEPS = ("translate", "mine", "filter", "threshold")
TRANSLATORS = ("auto", "apertium", "freedict")
FIXTURE_NOISE = 0.08  # label noise of the generated fixture, for filtering to find
SYSTEMS = ("baseline", "+TA", "+TA+SNS", "+TA+SNS+SVF", "+threshold")
#: the data rungs again, each at its own dev-tuned threshold
TUNED = ("baseline", "+TA", "+TA+SNS", "+TA+SNS+SVF")


@dataclass
class Strategies:
    """Which strategies a task uses (the paper: QC without filtering, QI without mining)."""

    translate: bool = True
    mine: bool = True
    filter: bool = True
    threshold: bool = True

    @classmethod
    def parse(cls, text: str) -> Strategies:
        """``"translate,mine,threshold"`` (or ``"none"``) -> Strategies."""
        names = [t.strip() for t in text.split(",") if t.strip() and t.strip() != "none"]
        unknown = [n for n in names if n not in STEPS]
        if unknown:
            raise ValueError(
                f"unknown strateg{'ies' if len(unknown) > 1 else 'y'} {unknown}; "
                f"choose from {', '.join(STEPS)} (or 'none')"
            )
        return cls(**{s: s in names for s in STEPS})


def _default_strategies() -> dict[str, Strategies]:
    return {"QC": Strategies(filter=False), "QI": Strategies(mine=False)}


@dataclass
class RunConfig:
    """Everything ``run`` needs; a JSON/TOML config file holds the same keys.

    ``data``: competition files (JSON lines, CSV, Parquet); empty -> a generated
    multilingual fixture (labelled as generated in the report).
    ``train_languages`` / ``unseen_languages``: default for files: the
    competition's training languages present in the data (en fr es ko pt ja, and
    th for QI), every other language unseen; for the fixture en fr es pt seen,
    de it pl unseen. Rows of a language in neither list are left out (counted).
    """

    data: list[str] = field(default_factory=list)
    out: str = "noiseforge-out/relevance"
    tasks: list[str] | None = None  # default: every task in the data
    train_languages: list[str] | None = None
    unseen_languages: list[str] | None = None
    dev_fraction: float = 0.1  # of training-language queries
    test_fraction: float = 0.2  # of training-language queries
    strategies: dict[str, Strategies] = field(default_factory=_default_strategies)
    translator: str = "auto"  # "auto" (Apertium, else FreeDict), "apertium" or "freedict"
    translate_from: list[str] | None = None  # default: every training language
    translate_per_language: int | None = None
    encoder: str = "use"  # "use", "hashing", or a local Hugging Face model path
    #: "embedding-mlp" (default), "cross-encoder:<local path>" (HFCrossEncoder) or
    #: "llm-judge:<local path>" (HFYesNoJudge, LoRA when peft is installed)
    model: str = "embedding-mlp"
    positive_share: float = 0.6  # mining: add negatives until positives are this share
    filter_confidence: float = 0.8
    filter_folds: int = 5
    seed: int = 0
    n_boot: int = 1000
    fixture_rows: int = 1500

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> RunConfig:
        """Read a ``.json`` or ``.toml`` file (keys as the fields; ``strategies`` maps a
        task to a list or comma-separated string of steps)."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} does not exist")
        if p.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(p.read_text())
        elif p.suffix == ".json":
            raw = json.loads(p.read_text())
        else:
            raise ValueError(f"config file {p}: use a .json or .toml file")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "strategies" in overrides and "strategies" in raw:  # per task: the CLI wins
            overrides["strategies"] = {**raw["strategies"], **overrides["strategies"]}
        raw.update(overrides)
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> RunConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known: {', '.join(sorted(known))}")
        raw = dict(raw)
        if "strategies" in raw:
            strategies = _default_strategies()
            for task, steps in raw["strategies"].items():
                if isinstance(steps, Strategies):
                    strategies[task] = steps
                else:
                    text = steps if isinstance(steps, str) else ",".join(steps)
                    strategies[task] = Strategies.parse(text)
            raw["strategies"] = strategies
        cfg = cls(**raw)
        cfg.check()
        return cfg

    def check(self) -> None:
        for name in ("data", "tasks", "train_languages", "unseen_languages", "translate_from"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, str) or not all(isinstance(x, str) for x in v)):
                raise ValueError(f"{name} must be a list of strings, got {v!r}")
        if self.tasks is not None and not set(self.tasks) <= {"QC", "QI"}:
            raise ValueError(f"tasks must be 'QC' and/or 'QI', got {self.tasks}")
        if self.filter_folds < 2:
            raise ValueError(f"filter_folds must be >= 2, got {self.filter_folds}")
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot}")
        for name in ("dev_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 < v < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {v}")
        if self.dev_fraction + self.test_fraction >= 0.8:
            raise ValueError("dev_fraction + test_fraction leave too little to train on (< 0.2)")
        if not 0 < self.positive_share <= 1:
            raise ValueError(f"positive_share must be in (0, 1], got {self.positive_share}")
        if not 0.5 < self.filter_confidence < 1:
            raise ValueError(f"filter_confidence must be in (0.5, 1), got {self.filter_confidence}")
        kind, _, where = self.model.partition(":")
        if not (
            self.model == "embedding-mlp" or (kind in ("cross-encoder", "llm-judge") and where)
        ):
            raise ValueError(
                f"model {self.model!r}: use 'embedding-mlp', 'cross-encoder:<local path>' or "
                "'llm-judge:<local path>'"
            )
        if self.translator not in TRANSLATORS:
            raise ValueError(
                f"translator {self.translator!r}: choose one of {', '.join(TRANSLATORS)}"
            )
        bad = [t for t in self.strategies if t not in ("QC", "QI")]
        if bad:
            raise ValueError(f"strategies are given per task 'QC' / 'QI', not {bad}")


@dataclass
class RunResult:
    table: pd.DataFrame  # ablation(): system, column, f1, low, high, delta...
    markdown: str
    table_tuned: pd.DataFrame  # the data rungs, each at its own dev-tuned threshold
    markdown_tuned: str
    test: pd.DataFrame  # the test rows with every system's prediction and probability
    train_sets: dict[str, pd.DataFrame]  # task -> final training set (with provenance)
    log: dict  # per task and step: what changed
    files: dict[str, Path]
