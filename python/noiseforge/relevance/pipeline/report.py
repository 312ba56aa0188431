"""What a relevance run leaves behind: ``report.md``, ``ablation.csv``, ``run.json``,
``predictions.csv``, the final training sets, the filtering step's review lists and
the ablation plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from noiseforge._common.files import atomic_write_text, pyplot, save_figure
from noiseforge.relevance.data import summary, write
from noiseforge.relevance.pipeline.config import STEPS, RunConfig


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
