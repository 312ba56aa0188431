"""``noiseforge relevance augment|mine|filter|train|evaluate|run``.

Each step reads competition files (JSON lines, CSV, Parquet) and writes a new
file; an input file is never overwritten. ``run`` is the whole ablation with a
report (Markdown table, CSV, JSON, plot).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noiseforge._common import argtypes

if TYPE_CHECKING:
    from noiseforge.relevance.engine import RelevanceEngine

#: the file types `relevance` reads and writes
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
TRANSLATORS = ("auto", "apertium", "freedict")
#: where `relevance filter` trains its out-of-fold models
ENGINES = argtypes.ENGINES

STEP_HELP = {
    "augment": "translate training queries into other languages (new rows with provenance)",
    "mine": "add semantic hard negatives found with the HNSW index",
    "filter": "remove (or list for review) rows whose label out-of-fold models contradict",
    "train": "train the default model (frozen embeddings + MLP) and save it",
    "evaluate": "F1 per task and language of a saved model, next to the all-relevant baseline",
    "run": "the whole ablation: baseline, +TA, +SNS, +SVF, +threshold, with a report",
}


def _langs(text: str | list[str] | None) -> list[str] | None:
    """Languages parsed by ``argtypes.languages`` (or a string, when the parser was bypassed)."""
    if text is None or isinstance(text, list):
        return text
    try:
        return argtypes.languages(text)
    except argparse.ArgumentTypeError as exc:
        raise argtypes.UsageError(str(exc)) from None


def _add_languages(
    parser: argparse.ArgumentParser,
    flag: str,
    help: str,
    *,
    required: bool = False,
    dest: str | None = None,
) -> None:
    """A comma-separated list of language codes (:func:`argtypes.languages`), default None."""
    named = {"dest": dest} if dest else {}
    parser.add_argument(
        flag, type=argtypes.languages, default=None, required=required, help=help, **named
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="relevance_command", required=True)
    p = {name: sub.add_parser(name, help=text) for name, text in STEP_HELP.items()}
    for name in ("augment", "mine", "filter", "train", "evaluate"):
        p[name].add_argument("data", nargs="+", type=argtypes.existing_file, help="input file(s)")
    for name in ("augment", "mine", "filter"):
        p[name].add_argument(
            "--out",
            required=True,
            type=argtypes.output_file(*SUFFIXES),
            help="output file (.jsonl, .json, .csv, .parquet); never one of the inputs",
        )
        p[name].add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    for name in ("mine", "filter", "train", "evaluate", "run"):
        p[name].add_argument(
            "--encoder",
            default=None,
            help="use (multilingual USE, default), hashing (no model) or a local HF model path",
        )
    _add_languages(p["augment"], "--languages", "target languages, e.g. de,it,pl,ar", required=True)
    _add_languages(p["augment"], "--from", "source languages (default all others)", dest="source")
    p["augment"].add_argument(
        "--translator",
        default="auto",
        choices=TRANSLATORS,
        help="auto (Apertium for a pair it has, else FreeDict; default), apertium or freedict",
    )
    p["augment"].add_argument(
        "--per-language",
        type=argtypes.int_at_least(1),
        default=None,
        help="sample N source rows per language",
    )
    p["augment"].add_argument(
        "--best-effort",
        action="store_true",
        help="translate the language pairs an installed translator has and skip the others "
        "(default: fail, naming the packages to install, before any work)",
    )
    p["mine"].add_argument(
        "--positive-share",
        type=argtypes.number(0, 1),
        default=0.6,
        help="target share of positives, in (0, 1] (default 0.6)",
    )
    p["filter"].add_argument(
        "--confidence",
        type=argtypes.number(0.5, 1, high_open=True),
        default=0.8,
        help="flag when p(other label) > this, in (0.5, 1) (default 0.8)",
    )
    p["filter"].add_argument(
        "--folds", type=argtypes.int_at_least(2), default=5, help="out-of-fold models (default 5)"
    )
    p["filter"].add_argument(
        "--review",
        type=argtypes.output_file(".csv"),
        default=None,
        help="also write flagged rows (with probabilities) to this CSV",
    )
    argtypes.add_engine(
        p["filter"], "one Ray task per fold on the cluster of --ray-address, the same result"
    )
    argtypes.add_engine(
        p["augment"],
        "distinct queries translated by a pool of translator actors on the cluster of "
        "--ray-address, the same rows",
    )
    argtypes.add_engine(
        p["mine"],
        "the targets' HNSW index in shards built and searched by Ray actors on the cluster "
        "of --ray-address, the same negatives",
    )
    p["train"].add_argument(
        "--dev",
        nargs="+",
        type=argtypes.existing_file,
        default=None,
        help="dev file(s) for early stopping and the threshold",
    )
    p["train"].add_argument(
        "--model-out",
        required=True,
        type=argtypes.output_file(),
        help="file to save the model to (never replaced)",
    )
    p["evaluate"].add_argument(
        "--model",
        required=True,
        type=argtypes.existing_file,
        help="a model saved by `relevance train`",
    )
    p["evaluate"].add_argument(
        "--threshold",
        type=argtypes.number(0, 1, low_open=False),
        default=None,
        help="in [0, 1] (default: the saved one)",
    )
    _add_languages(p["evaluate"], "--seen", "training languages, to report seen vs unseen groups")
    r = p["run"]
    r.add_argument(
        "--data",
        nargs="*",
        type=argtypes.existing_file,
        default=None,
        help="competition files (default: generated fixture)",
    )
    r.add_argument(
        "--config",
        type=argtypes.existing_file,
        default=None,
        help="a .json or .toml file with RunConfig keys",
    )
    argtypes.add_out_folder(r, "report folder (default noiseforge-out/relevance)")
    _add_languages(r, "--train-languages", "e.g. en,fr,es,ko,pt,ja")
    _add_languages(r, "--unseen-languages", "e.g. de,it,pl,ar")
    r.add_argument(
        "--strategies",
        action="append",
        default=None,
        metavar="TASK=STEPS",
        help="per task, e.g. QC=translate,mine,threshold (repeatable; 'none' for the bare model)",
    )
    r.add_argument(
        "--model",
        default=None,
        help="embedding-mlp (default), cross-encoder:<local path> or llm-judge:<local path> "
        "(a causal LM judged by p(yes); LoRA when peft is installed)",
    )
    argtypes.add_seed(r, help=None)
    argtypes.add_engine(
        r, "the data rungs (translation, mining, filtering) on the cluster of --ray-address"
    )
    for name in ("augment", "mine", "filter", "run"):
        argtypes.add_quiet(p[name])


def run(
    args: argparse.Namespace, engine: RelevanceEngine | Callable[..., Any] | None = None
) -> int:
    """Run the parsed command. ``engine``: where ``augment``, ``mine``, ``filter`` and
    the data rungs of ``run`` run (a :class:`~noiseforge.relevance.engine.RelevanceEngine`;
    a bare callable is a filter, as before); the command line passes the Ray one for
    ``--engine ray``."""
    argtypes.check_engine(args, engine, "noiseforge.distributed.engine.relevance_engine()")
    from noiseforge.relevance.engine import as_engine

    engine = as_engine(engine)
    if args.relevance_command != "run":
        outputs = [getattr(args, n, None) for n in ("out", "review", "model_out")]
        outputs = [p for p in outputs if p]
        for path in outputs:
            _check_output(path, args)
        if len({Path(p).resolve() for p in outputs}) < len(outputs):
            raise argtypes.UsageError("--out and --review name the same file: give two files")
    if args.relevance_command in ("augment", "mine", "filter", "run"):
        return {"augment": _augment, "mine": _mine, "filter": _filter, "run": _run}[
            args.relevance_command
        ](args, engine)
    return {
        "train": _train,
        "evaluate": _evaluate,
    }[args.relevance_command](args)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_output(path: str, args: argparse.Namespace) -> None:
    """Before any work: an output is never an input (not even through a link), and an
    existing file is replaced only with --overwrite."""
    target = Path(path)
    inputs = [*args.data, *(getattr(args, "dev", None) or []), getattr(args, "model", None)]
    if any(_same_file(Path(p), target) for p in inputs if p):
        raise argtypes.UsageError(f"{path} is an input file: write the result elsewhere")
    if target.exists() and not getattr(args, "overwrite", False):
        if not hasattr(args, "overwrite"):  # `train`: models are never replaced
            raise argtypes.UsageError(
                f"{path} exists: choose another --model-out (models are never replaced)"
            )
        raise argtypes.UsageError(f"{path} exists: choose another file or pass --overwrite")
    if target.suffix.lower() == ".parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError(f"writing {path} needs the 'pyarrow' package: pip install pyarrow")


def _check_disjoint(train, dev) -> None:
    """No query family (a query, case aside, with its translations and mined rows) of a
    task may have rows in both the training and the dev files."""
    import pandas as pd

    from noiseforge.relevance.groups import query_groups

    for task in sorted(set(train["task"]) & set(dev["task"])):
        both = pd.concat(
            [train[train["task"] == task], dev[dev["task"] == task]], ignore_index=True
        )
        fam = query_groups(both)
        n_train = int((train["task"] == task).sum())
        shared = set(fam[:n_train]) & set(fam[n_train:])
        if shared:
            example = both["query"][fam == min(shared)].iloc[0]
            raise ValueError(
                f"{task}: {len(shared)} query families are in both the training and the dev "
                f"files (e.g. {example!r}, with its translations): split by query so that dev "
                "measures unseen queries"
            )


def _read(paths: list[str]):
    from noiseforge.relevance.data import load

    return load(paths)


def _encoder(args):
    from noiseforge.relevance.pipeline import make_encoder

    return make_encoder(args.encoder or "use")


def _write(df, args) -> None:
    from noiseforge.relevance.data import write

    path = write(df, args.out, overwrite=args.overwrite)
    print(f"wrote {len(df)} rows to {path}")


def _pairs_text(pairs: list[tuple[str, str]]) -> str:
    """[("en", "de"), ("fr", "de"), ("en", "it")] -> "en/fr -> de, en -> it"."""
    by_target: dict[str, list[str]] = {}
    for src, tgt in pairs:
        by_target.setdefault(tgt, []).append(src)
    return ", ".join(f"{'/'.join(srcs)} -> {tgt}" for tgt, srcs in by_target.items())


def _augment(args, engine: RelevanceEngine) -> int:
    import pandas as pd

    from noiseforge.relevance.pipeline import make_translator
    from noiseforge.relevance.translate import (
        install_hint,
        untranslatable_pairs,
    )

    df = _read(args.data)
    targets, sources = _langs(args.languages), _langs(args.source)
    translator = make_translator(args.translator)
    missing = untranslatable_pairs(df, targets, translator, source_languages=sources)
    if missing:
        what = f"no installed translator for {_pairs_text(missing)}"
        hint = install_hint(missing, translator)
        if not args.best_effort:  # before any work, and nothing is written
            raise argtypes.CommandError(
                f"{what}: {hint}; or pass --best-effort to add only the pairs that can be "
                "translated"
            )
        print(f"noiseforge relevance augment: --best-effort: {what} ({hint})", file=sys.stderr)
    new, report = engine.augment(
        df,
        targets,
        translator,
        source_languages=sources,
        per_language=args.per_language,
        progress=not args.quiet,
    )
    for lang, rep in report.items():
        extra = f", no translator from {rep['unsupported']}" if rep["unsupported"] else ""
        print(
            f"  {lang}: {rep['added']} added of {rep['candidates']} candidates "
            f"({rep['unchanged_dropped']} unchanged, {rep['duplicates_dropped']} duplicates dropped{extra})"
        )
    _write(pd.concat([df, new], ignore_index=True), args)
    return 0


def _mine(args, engine: RelevanceEngine) -> int:
    df = _read(args.data)
    out = engine.mine(
        df, _encoder(args), positive_share=args.positive_share, progress=not args.quiet
    )
    print(f"  {len(out) - len(df)} semantic negatives added to {len(df)} rows")
    _write(out, args)
    return 0


def _filter(args, engine: RelevanceEngine) -> int:
    from noiseforge.relevance.model import EmbeddingMLP

    df = _read(args.data)
    encoder = _encoder(args)
    opts: dict[str, Any] = dict(progress=not args.quiet)
    if engine.name != "local":  # workers embed into this process's cache folder
        from noiseforge._common.paths import default_cache_dir

        opts["cache_dir"] = default_cache_dir() / "embeddings"
    result = engine.filter(
        df,
        lambda: EmbeddingMLP(encoder=encoder, **opts),
        k=args.folds,
        confidence=args.confidence,
        action="review" if args.review else "remove",
        review_path=args.review,
    )
    flagged = int(result.flags["flagged"].sum())
    kept = result.kept[~result.flags["flagged"].to_numpy()] if args.review else result.kept
    print(
        f"  {flagged} of {len(df)} rows flagged"
        + (f"; listed in {args.review}" if args.review else "")
    )
    print(result.report.to_string(index=False))
    _write(kept, args)
    return 0


def _train(args) -> int:
    from noiseforge.relevance.model import EmbeddingMLP, tune_threshold

    df = _read(args.data)
    dev = _read(args.dev) if args.dev else None
    if dev is not None:
        _check_disjoint(df, dev)
    model = EmbeddingMLP(encoder=_encoder(args), progress=True).fit(df, dev)
    if dev is not None:  # one threshold per task, tuned on the dev file
        for task in sorted(dev["task"].unique()):
            rows = dev[dev["task"] == task]
            t, f1 = tune_threshold(rows["label"].to_numpy(), model.predict_proba(rows))
            model.thresholds_[task] = float(t)
            print(f"  {task}: threshold {t:.3f} tuned on dev (F1 {f1:.4f})")
    model.save(args.model_out)
    print(f"saved the model to {args.model_out} (it holds the training queries and targets)")
    return 0


def _evaluate(args) -> int:
    import numpy as np

    from noiseforge.relevance.evaluate import evaluate
    from noiseforge.relevance.model import EmbeddingMLP

    df = _read(args.data)
    unlabelled = int((df["label"] < 0).sum())
    if unlabelled:
        raise ValueError(
            f"{unlabelled} rows have no label: evaluate needs labelled rows (0/1); "
            "drop the test-file rows"
        )
    model = EmbeddingMLP.load(args.model, encoder=_encoder(args) if args.encoder else None)
    if args.threshold is not None:
        pred = (model.predict_proba(df) >= args.threshold).astype(np.int64)
        print(f"threshold {args.threshold:.3f} (given)")
    else:
        pred = model.predict(df)
        print(
            "thresholds (saved): " + ", ".join(f"{t} {v:.3f}" for t, v in model.thresholds_.items())
        )
    table = evaluate(df, pred, seen_languages=_langs(args.seen))
    cols = ["task", "group", "n", "f1", "f1_low", "f1_high", "baseline_f1", "delta_vs_baseline"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _run(args, engine: RelevanceEngine) -> int:
    from noiseforge.relevance.pipeline import RunConfig, Strategies, run

    overrides = dict(
        data=args.data or None,
        out=args.out,
        train_languages=_langs(args.train_languages),
        unseen_languages=_langs(args.unseen_languages),
        encoder=args.encoder,
        model=args.model,
        seed=args.seed,
    )
    if args.strategies:
        strategies = {}
        for item in args.strategies:
            task, sep, steps = item.partition("=")
            if not sep:
                raise argtypes.UsageError(
                    f"--strategies {item!r}: write TASK=STEPS, e.g. QC=translate,mine"
                )
            try:
                strategies[task.strip()] = Strategies.parse(steps)
            except ValueError as exc:
                raise argtypes.UsageError(f"--strategies {item!r}: {exc}") from None
        overrides["strategies"] = strategies
    if args.config:
        cfg = RunConfig.from_file(args.config, **overrides)
    else:
        cfg = RunConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    why = argtypes.folder_problem(cfg.out)
    if why:  # found before the work, not after it
        raise argtypes.CommandError(f"cannot write the report: {why}; choose a writable --out")
    result = run(cfg, progress=not args.quiet, engine=engine)
    print()
    print(result.markdown)
    print("\nEach data rung at its own dev-tuned threshold:\n")
    print(result.markdown_tuned)
    print()
    print("written: " + ", ".join(str(p) for p in result.files.values()))
    if "plot" not in result.files:
        print("(no plot: matplotlib is not installed; pip install matplotlib)", file=sys.stderr)
    return 0
