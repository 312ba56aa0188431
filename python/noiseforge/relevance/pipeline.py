"""The relevance engine end to end: split, augment, mine, filter, train, tune,
evaluate -- the paper's ablation as one call (``noiseforge relevance run``).

Protocol (the competition's): the labelled rows of the *training languages*
are split by query (no query in two parts) into train / dev / test; rows in the
*unseen languages* are test rows only, as de it pl ar were in the CIKM 2025
AnalytiCup QC task. Each task (QC, QI) then climbs its ladder of systems, every
rung adding one strategy to the training data of the rung below:

  baseline -> +TA (translation augmentation into the unseen languages)
           -> +SNS (semantic negatives) -> +SVF (self-validation filtering)
           -> +threshold (decision threshold tuned on dev)

The data rungs decide at 0.5, as in the paper; because adding translated
positives or mined negatives also shifts the model's calibration, a second
table gives every data rung at its own dev-tuned threshold, which isolates the
strategy's effect on the ranking. A strategy switched off for a task leaves that
task's rung equal to the one below (the report marks it). Test rows are never used to choose anything:
early stopping and the threshold use dev only. Every F1 comes with a bootstrap
interval (grouped by query) and the change to the rung above with a paired
interval, next to the all-relevant baseline.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from noiseforge._common.files import atomic_write_text, pyplot, save_figure
from noiseforge.relevance.data import load, summary, write
from noiseforge.relevance.embed import Encoder, HashingEncoder, HFEncoder, USEEncoder
from noiseforge.relevance.evaluate import ablation, format_ablation
from noiseforge.relevance.filtering import self_validation_filter
from noiseforge.relevance.fixture import make_fixture
from noiseforge.relevance.groups import query_key
from noiseforge.relevance.mining import add_semantic_negatives
from noiseforge.relevance.model import EmbeddingMLP, RelevanceModel, tune_threshold
from noiseforge.relevance.translate import (
    ApertiumTranslator,
    CachedTranslator,
    FreeDictTranslator,
    Translator,
    augment_translations,
    install_hint,
)

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


def make_encoder(spec: str) -> Encoder:
    """``"use"`` (multilingual USE v3, default), ``"hashing"`` (no model: shared
    words only) or a local Hugging Face / sentence-transformers model path."""
    if spec == "use":
        return USEEncoder()
    if spec == "hashing":
        return HashingEncoder(dim=128)
    if Path(spec).exists():
        return HFEncoder(spec)
    raise ValueError(
        f"encoder {spec!r} is neither 'use', 'hashing' nor an existing local model folder"
    )


def make_model_factory(
    spec: str, progress: bool = True
) -> Callable[[Encoder, int], RelevanceModel]:
    """``(encoder, seed) -> model`` for a RunConfig ``model`` string."""
    kind, _, where = spec.partition(":")
    if spec == "embedding-mlp":
        return lambda enc, seed: EmbeddingMLP(encoder=enc, seed=seed, progress=progress)
    if kind == "cross-encoder" and where:
        from noiseforge.relevance.model import HFCrossEncoder

        return lambda enc, seed: HFCrossEncoder(where, seed=seed)
    if kind == "llm-judge" and where:
        import importlib.util

        from noiseforge.relevance.model import HFYesNoJudge

        lora = importlib.util.find_spec("peft") is not None
        return lambda enc, seed: HFYesNoJudge(where, lora=lora, seed=seed)
    raise ValueError(
        f"model {spec!r}: use 'embedding-mlp', 'cross-encoder:<local path>' or "
        "'llm-judge:<local path>'"
    )


def make_translator(name: str) -> Translator | str:
    """``"auto"`` picks per language pair; ``"apertium"`` / ``"freedict"`` force one
    backend (through the disk cache)."""
    if name == "auto":
        return name
    if name == "apertium":
        return CachedTranslator(ApertiumTranslator())
    if name == "freedict":
        return CachedTranslator(FreeDictTranslator())
    raise ValueError(f"translator {name!r}: choose one of {', '.join(TRANSLATORS)}")


def load_rows(cfg: RunConfig) -> tuple[pd.DataFrame, str]:
    """The labelled rows to work on and a one-line description of where they come from."""
    if not cfg.data:
        parts = [
            make_fixture("QC", cfg.fixture_rows, seed=cfg.seed, label_noise=FIXTURE_NOISE),
            make_fixture("QI", cfg.fixture_rows, seed=cfg.seed + 1, label_noise=FIXTURE_NOISE),
        ]
        rows = pd.concat(parts, ignore_index=True)
        return rows, (
            f"GENERATED fixture ({len(rows)} rows made by noiseforge.relevance.fixture, "
            f"{FIXTURE_NOISE:.0%} of labels flipped on purpose; not real data: point --data at "
            "competition files for real results)"
        )
    rows = load(cfg.data)
    synthetic = rows["strategy"] != "original"
    if synthetic.any():
        kinds = ", ".join(sorted(set(rows.loc[synthetic, "strategy"])))
        raise ValueError(
            f"{int(synthetic.sum())} input rows are synthesized ({kinds}): run() splits original "
            "rows and synthesizes from the training part itself, so a translation or mined row "
            "of a test query would leak; give the original files (or drop rows whose strategy "
            "is not 'original')"
        )
    unlabelled = int((rows["label"] < 0).sum())
    rows = rows[rows["label"] >= 0].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{cfg.data}: no labelled rows (label 0/1) to train and evaluate on")
    what = f"{len(rows)} labelled rows from {', '.join(map(str, cfg.data))}"
    if unlabelled:
        what += f" ({unlabelled} unlabelled rows set aside: they cannot be scored)"
    return rows, what


def languages(cfg: RunConfig, rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    present = sorted(rows["language"].unique())
    if cfg.train_languages is not None:
        train = list(cfg.train_languages)
    elif not cfg.data:
        train = ["en", "fr", "es", "pt"]
    else:  # the competition's training languages (th: QI only)
        train = [x for x in ("en", "fr", "es", "ko", "pt", "ja", "th") if x in present]
    unseen = (
        list(cfg.unseen_languages)
        if cfg.unseen_languages is not None
        else [x for x in present if x not in train]
    )
    missing = [x for x in train if x not in present]
    if missing or not train:
        raise ValueError(
            f"training language(s) {missing or train} have no rows; the data has {present}: "
            "set train_languages"
        )
    overlap = sorted(set(train) & set(unseen))
    if overlap:
        raise ValueError(f"languages {overlap} are both training and unseen languages")
    empty = [x for x in unseen if x not in present]
    if empty:
        raise ValueError(
            f"unseen language(s) {empty} have no rows; the data has {present}: fix unseen_languages"
        )
    return train, unseen


def _uniform(key: str, seed: int) -> float:
    """A query's fixed draw in [0, 1): independent of row order and file layout."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def split(
    rows: pd.DataFrame, train_languages: Sequence[str], cfg: RunConfig
) -> dict[str, pd.DataFrame]:
    """train / dev / test: each query (lower-cased) of the training languages goes to
    exactly one part by a seeded hash; every row of another language is a test row, and
    so is a training-language row whose query also occurs in another language (no query
    is ever on both sides)."""
    seen = rows["language"].isin(list(train_languages)).to_numpy()
    keys = query_key(rows["query"])
    u = keys.map({k: _uniform(k, cfg.seed) for k in pd.unique(keys)}).to_numpy()
    shared = keys.isin(set(keys[~seen])).to_numpy()
    part = np.full(len(rows), "test", dtype=object)
    part[seen & ~shared & (u >= cfg.dev_fraction + cfg.test_fraction)] = "train"
    part[seen & ~shared & (u < cfg.dev_fraction)] = "dev"
    return {p: rows[part == p].reset_index(drop=True) for p in ("train", "dev", "test")}


def run(
    cfg: RunConfig,
    *,
    model_factory: Callable[[Encoder, int], RelevanceModel] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """The ablation of ``cfg`` (see the module docstring); writes the report to ``cfg.out``."""
    cfg.check()
    out = Path(cfg.out).resolve()
    inside = [p for p in cfg.data if out in Path(p).resolve().parents]
    if inside:
        raise ValueError(
            f"input file(s) {inside} are inside the report folder {cfg.out}, whose files a run "
            "replaces: copy them elsewhere or choose another out folder"
        )
    t0 = time.perf_counter()
    rows, source = load_rows(cfg)
    tasks = cfg.tasks or sorted(rows["task"].unique())
    rows = rows[rows["task"].isin(tasks)].reset_index(drop=True)
    train_langs, unseen = languages(cfg, rows)
    echo(f"data: {source}")
    used = rows["language"].isin(train_langs + unseen)
    if not used.all():
        left = rows.loc[~used, "language"].value_counts().sort_index()
        echo(
            "left out (language neither trained on nor unseen): "
            + ", ".join(f"{lang} {n}" for lang, n in left.items())
        )
    rows = rows[used].reset_index(drop=True)
    parts = split(rows, train_langs, cfg)
    echo(
        f"split: train {len(parts['train'])} / dev {len(parts['dev'])} / test "
        f"{len(parts['test'])} rows; training languages {' '.join(train_langs)}; "
        f"unseen {' '.join(unseen) or '(none)'}"
    )
    encoder = make_encoder(cfg.encoder)
    factory = model_factory or make_model_factory(cfg.model, progress)
    test = parts["test"].copy()
    systems = {name: np.zeros(len(test), dtype=np.int64) for name in SYSTEMS}
    tuned = {name: np.zeros(len(test), dtype=np.int64) for name in TUNED}
    log: dict = {"source": source, "train_languages": train_langs, "unseen_languages": unseen}
    train_sets = {}
    test["p_final"] = np.nan
    for task in tasks:
        in_task = (test["task"] == task).to_numpy()
        ladder = _Ladder(
            cfg,
            task,
            parts["train"][parts["train"]["task"] == task].reset_index(drop=True),
            parts["dev"][parts["dev"]["task"] == task].reset_index(drop=True),
            test[in_task],
            encoder,
            factory,
            echo,
        )
        preds, p_final = ladder.climb(unseen, train_langs, progress)
        for name, pred in preds.items():
            systems[name][in_task] = pred
        for name in TUNED:
            tuned[name][in_task] = ladder.tuned[name]
        test.loc[in_task, "p_final"] = p_final
        train_sets[task] = ladder.current
        log[task] = {"strategies": asdict(ladder.strat), "steps": ladder.steps}

    for name, pred in systems.items():
        test[f"pred {name}"] = pred
    table = ablation(test, systems, seen_languages=train_langs, n_boot=cfg.n_boot, seed=cfg.seed)
    markdown = format_ablation(table)
    table_tuned = ablation(
        test, tuned, seen_languages=train_langs, n_boot=cfg.n_boot, seed=cfg.seed
    )
    markdown_tuned = format_ablation(table_tuned)
    log["seconds"] = round(time.perf_counter() - t0, 1)
    files = write_report(
        cfg, table, markdown, markdown_tuned, table_tuned, test, train_sets, log, rows
    )
    return RunResult(table, markdown, table_tuned, markdown_tuned, test, train_sets, log, files)


class _Ladder:
    """One task's climb: baseline, +TA, +SNS, +SVF, +threshold (see the module doc)."""

    def __init__(self, cfg, task, train, dev, test, encoder, factory, echo) -> None:
        self.cfg, self.task, self.dev, self.test = cfg, task, dev, test
        self.encoder, self.factory, self.echo = encoder, factory, echo
        self.strat = cfg.strategies.get(task, Strategies())
        self.current = train
        self.steps: dict = {}
        #: rung -> test predictions at that rung's own dev-tuned threshold
        self.tuned: dict[str, np.ndarray] = {}
        if train.empty or dev.empty or test.empty:
            raise ValueError(
                f"task {task}: train {len(train)}, dev {len(dev)}, test {len(test)} rows: each "
                "part needs rows (more data, or other fractions/languages)"
            )

    def fit(self, name: str) -> None:
        t = time.perf_counter()
        model = self.factory(self.encoder, self.cfg.seed)
        model.fit(self.current, self.dev)
        self.p_test = np.asarray(model.predict_proba(self.test))
        self.p_dev = np.asarray(model.predict_proba(self.dev))
        t_dev, _ = tune_threshold(self.dev["label"].to_numpy(), self.p_dev)
        self.tuned[name] = self.p_test >= t_dev
        info = self.steps.setdefault(name, {})
        info["dev_threshold"] = round(float(t_dev), 4)
        info["fit_seconds"] = round(time.perf_counter() - t, 1)
        info["train_rows"] = len(self.current)
        info["positive_share"] = round(float(self.current["label"].mean()), 4)

    def climb(self, unseen, train_langs, progress) -> tuple[dict[str, np.ndarray], np.ndarray]:
        cfg, task, strat, echo = self.cfg, self.task, self.strat, self.echo
        preds = {}
        self.fit("baseline")
        preds["baseline"] = self.p_test >= 0.5
        echo(f"[{task}] baseline: {len(self.current)} training rows")

        if strat.translate and unseen:
            new, report = augment_translations(
                self.current,
                unseen,
                make_translator(cfg.translator),
                source_languages=cfg.translate_from or train_langs,
                per_language=cfg.translate_per_language,
                seed=cfg.seed,
                progress=progress,
            )
            missing = {k: v["unsupported"] for k, v in report.items() if v["unsupported"]}
            if missing:
                echo(
                    f"[{task}] +TA: no translator for "
                    + "; ".join(f"{'/'.join(srcs)} -> {t}" for t, srcs in missing.items())
                    + " (to add them: "
                    + install_hint(
                        [(src, t) for t, srcs in missing.items() for src in srcs], cfg.translator
                    )
                    + ")"
                )
            if len(new):
                self.current = pd.concat([self.current, new], ignore_index=True)
                self.fit("+TA")
                self.steps["+TA"]["added"] = {k: v["added"] for k, v in report.items()}
                self.steps["+TA"]["unsupported"] = missing
                echo(f"[{task}] +TA: {len(new)} translated rows ({_per_lang(report)})")
            else:
                self.steps["+TA"] = {"off": True, "reason": "no query could be translated"}
                echo(f"[{task}] +TA: nothing translated, so the step is off")
        else:
            self.steps["+TA"] = {"off": True}
        preds["+TA"] = self.p_test >= 0.5
        self.tuned.setdefault("+TA", self.tuned["baseline"])

        if strat.mine:
            before = len(self.current)
            self.current = add_semantic_negatives(
                self.current,
                self.encoder,
                positive_share=cfg.positive_share,
                seed=cfg.seed,
                progress=progress,
            )
            self.fit("+TA+SNS")
            self.steps["+TA+SNS"]["added"] = len(self.current) - before
            echo(f"[{task}] +SNS: {len(self.current) - before} mined negatives")
        else:
            self.steps["+TA+SNS"] = {"off": True}
        preds["+TA+SNS"] = self.p_test >= 0.5
        self.tuned.setdefault("+TA+SNS", self.tuned["+TA"])

        if strat.filter:
            review = Path(cfg.out) / f"review-{task}.csv"
            review.parent.mkdir(parents=True, exist_ok=True)
            result = self_validation_filter(
                self.current,
                lambda: self.factory(self.encoder, cfg.seed),
                k=cfg.filter_folds,
                seeds=(cfg.seed,),
                confidence=cfg.filter_confidence,
                action="remove",
            )
            _write_review(self.current, result.flags, review)
            removed = len(self.current) - len(result.kept)
            self.current = result.kept
            self.fit("+TA+SNS+SVF")
            self.steps["+TA+SNS+SVF"].update(removed=removed, review_file=str(review))
            echo(f"[{task}] +SVF: {removed} rows removed, listed in {review}")
        else:
            self.steps["+TA+SNS+SVF"] = {"off": True}
        preds["+TA+SNS+SVF"] = self.p_test >= 0.5
        self.tuned.setdefault("+TA+SNS+SVF", self.tuned["+TA+SNS"])

        threshold = 0.5
        if strat.threshold:
            threshold, dev_f1 = tune_threshold(self.dev["label"].to_numpy(), self.p_dev)
            self.steps["+threshold"] = {"threshold": round(float(threshold), 4), "dev_f1": dev_f1}
            echo(f"[{task}] +threshold: {threshold:.3f} (dev F1 {dev_f1:.4f})")
        else:
            self.steps["+threshold"] = {"off": True}
        preds["+threshold"] = self.p_test >= threshold
        return preds, self.p_test


def _per_lang(report: dict) -> str:
    return ", ".join(f"{k} {v['added']}" for k, v in report.items())


def _write_review(df: pd.DataFrame, flags: pd.DataFrame, path: Path) -> None:
    flagged = flags["flagged"].to_numpy()
    out = df.reset_index(drop=True)[flagged].copy()
    for col in flags.columns:
        if col not in out.columns:
            out[col] = flags[col].to_numpy()[flagged]
    atomic_write_text(path, out.to_csv(index=False))


def write_report(
    cfg: RunConfig,
    table: pd.DataFrame,
    markdown: str,
    markdown_tuned: str,
    table_tuned: pd.DataFrame,
    test: pd.DataFrame,
    train_sets: dict[str, pd.DataFrame],
    log: dict,
    rows: pd.DataFrame,
) -> dict[str, Path]:
    """report.md, ablation.csv, run.json, predictions.csv, train-<task>.jsonl and
    (with matplotlib) ablation.png in ``cfg.out`` (the filtering step also wrote
    review-<task>.csv there); only these names are written."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    off = [
        f"{task}: {step} off"
        for task in train_sets
        for step, info in log[task]["steps"].items()
        if isinstance(info, dict) and info.get("off")
    ]
    text = [
        "# noiseforge relevance run",
        "",
        f"Data: {log['source']}.",
        f"Training languages: {', '.join(log['train_languages'])}; unseen (test only): "
        f"{', '.join(log['unseen_languages']) or 'none'}.",
        "Cells: F1 of the positive class [95 % bootstrap interval, grouped by query]; from the "
        "second line on, (change to the line above [paired interval]). `all-relevant` answers "
        "1 everywhere: the floor every system must beat.",
        "",
        markdown,
        "",
        "The same data rungs, each at its own threshold tuned on dev (separates a strategy's "
        "effect on the ranking from its shift of the model's calibration, which the 0.5 "
        "rungs above mix):",
        "",
        markdown_tuned,
        "",
        "Strategies switched off (the line repeats the one above for that task): "
        + ("; ".join(off) if off else "none")
        + ".",
        "",
        "## Data",
        "",
        _markdown(summary(rows)),
        "",
        "## Steps",
        "",
        "```json",
        json.dumps({k: log[k] for k in train_sets}, indent=2, default=str),
        "```",
        f"\nTotal time: {log['seconds']} s.",
    ]
    files["report"] = atomic_write_text(out / "report.md", "\n".join(text) + "\n")
    both = pd.concat(
        [table.assign(decision="0.5 / +threshold"), table_tuned.assign(decision="dev-tuned")]
    )
    files["ablation"] = atomic_write_text(out / "ablation.csv", both.to_csv(index=False))
    meta = dict(config=_jsonable(cfg), log=log)
    files["run"] = atomic_write_text(
        out / "run.json", json.dumps(meta, indent=2, default=str) + "\n"
    )
    files["predictions"] = atomic_write_text(out / "predictions.csv", test.to_csv(index=False))
    for task, df in train_sets.items():
        files[f"train-{task}"] = write(df, out / f"train-{task}.jsonl", overwrite=True)
    png = plot_ablation(table, out / "ablation.png")
    if png is not None:
        files["plot"] = png
    return files


def _markdown(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|---" * len(df.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _jsonable(cfg: RunConfig) -> dict:
    d = asdict(cfg)
    d["strategies"] = {t: [s for s in STEPS if getattr(v, s)] for t, v in cfg.strategies.items()}
    return d


def plot_ablation(table: pd.DataFrame, path: Path) -> Path | None:
    """Grouped bars: F1 per system for each task / language group, with intervals."""
    plt = pyplot()
    if plt is None:
        return None
    cols = list(dict.fromkeys(table["column"]))
    systems = list(dict.fromkeys(table["system"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cols)), 4), dpi=120)
    width = 0.8 / len(systems)
    for i, s in enumerate(systems):
        sub = table[table["system"] == s].set_index("column").reindex(cols)
        xs = np.arange(len(cols)) + (i - (len(systems) - 1) / 2) * width
        err = np.vstack([sub["f1"] - sub["low"], sub["high"] - sub["f1"]])
        ax.bar(xs, sub["f1"], width, yerr=err, capsize=2, label=s)
    ax.set_xticks(np.arange(len(cols)))
    ax.set_xticklabels(cols)
    lo = float(np.nanmin(table["low"])) if len(table) else 0.0
    ax.set_ylim(max(0.0, math.floor(lo * 20) / 20 - 0.05), 1.0)
    ax.set_ylabel("F1 (positive class)")
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("relevance ablation (95 % bootstrap intervals)")
    fig.tight_layout()
    return save_figure(fig, path)
