"""The relevance engine end to end: split, augment, mine, filter, train, tune,
evaluate -- the paper's ablation as one call (``noiseforge relevance run``).

Protocol (the competition's): the labelled rows of the *training languages*
are split by query (no query in two parts) into train / dev / test; rows in the
*unseen languages* are test rows only, as de it pl ar were in the CIKM 2025
AnalytiCup QC task. Each task (QC, QI) then climbs its ladder of systems
(:data:`RUNGS`), every rung adding one strategy to the training data of the rung
below:

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

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from noiseforge.relevance.embed import Encoder
from noiseforge.relevance.engine import RelevanceEngine, as_engine
from noiseforge.relevance.evaluate import ablation, format_ablation
from noiseforge.relevance.model import RelevanceModel, tune_threshold
from noiseforge.relevance.pipeline.components import (
    languages,
    load_rows,
    make_encoder,
    make_model_factory,
    make_translator,
    split,
)
from noiseforge.relevance.pipeline.config import RunConfig, RunResult, Strategies
from noiseforge.relevance.pipeline.report import _per_lang, _write_review, write_report
from noiseforge.relevance.translate import install_hint


def run(
    cfg: RunConfig,
    *,
    model_factory: Callable[[Encoder, int], RelevanceModel] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    engine: RelevanceEngine | None = None,
) -> RunResult:
    """The ablation of ``cfg`` (see the module docstring); writes the report to ``cfg.out``.

    ``engine``: where the data rungs run (translation, mining, filtering; default
    this process, :data:`~noiseforge.relevance.engine.LOCAL`); the Ray engine gives
    the same training sets."""
    engine = as_engine(engine)
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
    systems = {r.system: np.zeros(len(test), dtype=np.int64) for r in RUNGS}
    tuned = {r.system: np.zeros(len(test), dtype=np.int64) for r in RUNGS if r.data}
    log: dict = {"source": source, "train_languages": train_langs, "unseen_languages": unseen}
    train_sets = {}
    test["p_final"] = np.nan
    for task in tasks:
        in_task = (test["task"] == task).to_numpy()
        climb = Climb(
            cfg,
            task,
            parts["train"][parts["train"]["task"] == task].reset_index(drop=True),
            parts["dev"][parts["dev"]["task"] == task].reset_index(drop=True),
            test[in_task],
            encoder,
            factory,
            echo,
            unseen=unseen,
            train_languages=train_langs,
            progress=progress,
            engine=engine,
        )
        preds = climb_ladder(climb)
        for name, pred in preds.items():
            systems[name][in_task] = pred
        for name in tuned:
            tuned[name][in_task] = climb.tuned[name]
        test.loc[in_task, "p_final"] = climb.p_test
        train_sets[task] = climb.current
        log[task] = {"strategies": asdict(climb.strat), "steps": climb.steps}

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


class Climb:
    """One task on its way up the ladder: the training set so far, the latest model's
    dev and test probabilities, the decision threshold, and what each rung did.

    Parameters
    ----------
    cfg : RunConfig
        The run's settings (seed, strategy parameters, report folder).
    task : str
        ``"QC"`` or ``"QI"``; picks the task's :class:`Strategies` from ``cfg``.
    train, dev, test : pandas.DataFrame
        The task's rows of each part of the split; none may be empty.
    encoder : Encoder
        The run's encoder (for the models and for mining).
    factory : callable
        ``(encoder, seed) -> model``; every rung trains a fresh one.
    echo : callable
        Where the progress lines go.
    unseen, train_languages : list of str
        The run's unseen and training languages (translation targets and sources).
    progress : bool
        Progress bars in the steps that have them.
    engine : RelevanceEngine
        Where the data steps run (default this process).
    """

    def __init__(
        self,
        cfg: RunConfig,
        task: str,
        train: pd.DataFrame,
        dev: pd.DataFrame,
        test: pd.DataFrame,
        encoder: Encoder,
        factory: Callable[[Encoder, int], RelevanceModel],
        echo: Callable[[str], None],
        *,
        unseen: list[str],
        train_languages: list[str],
        progress: bool,
        engine: RelevanceEngine | None = None,
    ) -> None:
        self.engine = as_engine(engine)
        self.cfg, self.task, self.dev, self.test = cfg, task, dev, test
        self.encoder, self.factory, self.echo = encoder, factory, echo
        self.unseen, self.train_languages, self.progress = unseen, train_languages, progress
        self.strat = cfg.strategies.get(task, Strategies())
        self.current = train
        self.steps: dict = {}
        #: data rung -> test predictions at that rung's own dev-tuned threshold
        self.tuned: dict[str, np.ndarray] = {}
        #: the latest fit: test and dev probabilities, test predictions at its dev threshold
        self.p_test = self.p_dev = self.p_tuned = np.empty(0)
        #: where the rungs decide (0.5 until a rung tunes it)
        self.threshold: float = 0.5
        if train.empty or dev.empty or test.empty:
            raise ValueError(
                f"task {task}: train {len(train)}, dev {len(dev)}, test {len(test)} rows: each "
                "part needs rows (more data, or other fractions/languages)"
            )

    def fit(self, name: str) -> None:
        """Train a fresh model on the current training set; record it as rung ``name``."""
        t = time.perf_counter()
        model = self.factory(self.encoder, self.cfg.seed)
        model.fit(self.current, self.dev)
        self.p_test = np.asarray(model.predict_proba(self.test))
        self.p_dev = np.asarray(model.predict_proba(self.dev))
        t_dev, _ = tune_threshold(self.dev["label"].to_numpy(), self.p_dev)
        self.p_tuned = self.p_test >= t_dev
        info = self.steps.setdefault(name, {})
        info["dev_threshold"] = round(float(t_dev), 4)
        info["fit_seconds"] = round(time.perf_counter() - t, 1)
        info["train_rows"] = len(self.current)
        info["positive_share"] = round(float(self.current["label"].mean()), 4)


@dataclass(frozen=True)
class Rung:
    """One system of the ablation ladder.

    Parameters
    ----------
    system : str
        The system's name in the ablation table (``"+TA+SNS"``).
    step : str or None
        The :class:`Strategies` switch that turns the rung on for a task; ``None``:
        always on. A rung switched off repeats the rung below (its log says
        ``{"off": True}``).
    apply : callable
        ``apply(climb, system)`` does the rung's step on the :class:`Climb` (a data
        rung changes ``climb.current`` and refits as ``system``; a decision rung
        sets ``climb.threshold``), logs it in ``climb.steps[system]`` and echoes a
        line.
    data : bool
        A data rung (it changes the training data): it also appears in the table of
        dev-tuned thresholds.
    """

    system: str
    step: str | None
    apply: Callable[[Climb, str], None]
    data: bool = True


def climb_ladder(climb: Climb) -> dict[str, np.ndarray]:
    """Walk :data:`RUNGS` for one task: each rung's test predictions (and, for the data
    rungs, ``climb.tuned``); ``climb.p_test`` ends as the final model's."""
    preds = {}
    for rung in RUNGS:
        if rung.step is None or getattr(climb.strat, rung.step):
            rung.apply(climb, rung.system)
        else:
            climb.steps[rung.system] = {"off": True}
        preds[rung.system] = climb.p_test >= climb.threshold
        if rung.data:
            climb.tuned[rung.system] = climb.p_tuned
    return preds


def _baseline(climb: Climb, system: str) -> None:
    climb.fit(system)
    climb.echo(f"[{climb.task}] {system}: {len(climb.current)} training rows")


def _translate(climb: Climb, system: str) -> None:
    """+TA: translate training rows into the unseen languages (off without any)."""
    cfg, task, echo = climb.cfg, climb.task, climb.echo
    if not climb.unseen:
        climb.steps[system] = {"off": True}
        return
    new, report = climb.engine.augment(
        climb.current,
        climb.unseen,
        make_translator(cfg.translator),
        source_languages=cfg.translate_from or climb.train_languages,
        per_language=cfg.translate_per_language,
        seed=cfg.seed,
        progress=climb.progress,
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
        climb.current = pd.concat([climb.current, new], ignore_index=True)
        climb.fit(system)
        climb.steps[system]["added"] = {k: v["added"] for k, v in report.items()}
        climb.steps[system]["unsupported"] = missing
        echo(f"[{task}] +TA: {len(new)} translated rows ({_per_lang(report)})")
    else:
        climb.steps[system] = {"off": True, "reason": "no query could be translated"}
        echo(f"[{task}] +TA: nothing translated, so the step is off")


def _mine(climb: Climb, system: str) -> None:
    """+SNS: add semantic hard negatives until positives are ``cfg.positive_share``."""
    before = len(climb.current)
    climb.current = climb.engine.mine(
        climb.current,
        climb.encoder,
        positive_share=climb.cfg.positive_share,
        seed=climb.cfg.seed,
        progress=climb.progress,
    )
    climb.fit(system)
    climb.steps[system]["added"] = len(climb.current) - before
    climb.echo(f"[{climb.task}] +SNS: {len(climb.current) - before} mined negatives")


def _filter(climb: Climb, system: str) -> None:
    """+SVF: remove the rows cross-validated models confidently disagree with; they are
    listed in ``review-<task>.csv``."""
    cfg = climb.cfg
    review = Path(cfg.out) / f"review-{climb.task}.csv"
    review.parent.mkdir(parents=True, exist_ok=True)
    factory, encoder, seed = climb.factory, climb.encoder, cfg.seed  # not the whole climb
    result = climb.engine.filter(
        climb.current,
        lambda: factory(encoder, seed),
        k=cfg.filter_folds,
        seeds=(cfg.seed,),
        confidence=cfg.filter_confidence,
        action="remove",
    )
    _write_review(climb.current, result.flags, review)
    removed = len(climb.current) - len(result.kept)
    climb.current = result.kept
    climb.fit(system)
    climb.steps[system].update(removed=removed, review_file=str(review))
    climb.echo(f"[{climb.task}] +SVF: {removed} rows removed, listed in {review}")


def _tune_threshold(climb: Climb, system: str) -> None:
    """+threshold: decide at the threshold that maximises the final model's dev F1."""
    threshold, dev_f1 = tune_threshold(climb.dev["label"].to_numpy(), climb.p_dev)
    climb.threshold = threshold
    climb.steps[system] = {"threshold": round(float(threshold), 4), "dev_f1": dev_f1}
    climb.echo(f"[{climb.task}] +threshold: {threshold:.3f} (dev F1 {dev_f1:.4f})")


#: the ladder, bottom to top; adding a system is adding a rung here (and its name to
#: SYSTEMS, and to TUNED for a data rung, in the config module)
RUNGS: tuple[Rung, ...] = (
    Rung("baseline", None, _baseline),
    Rung("+TA", "translate", _translate),
    Rung("+TA+SNS", "mine", _mine),
    Rung("+TA+SNS+SVF", "filter", _filter),
    Rung("+threshold", "threshold", _tune_threshold, data=False),
)
