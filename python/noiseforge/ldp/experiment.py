"""LDPKiT experiments: one epsilon (``noiseforge ldp run``) or a sweep
(``noiseforge ldp sweep``), reported as a table (Markdown, CSV, JSON) and a plot.

Every point measures three accuracies on the same private inputs:

- ``clean``: the cloud model on the un-noised inputs (no privacy; the ceiling);
- ``standard``: standard eps-LDP -- each input released once, the cloud's answer;
- ``ldpkit``: LDPKiT -- each input released once, the free expansion queried,
  a local model trained on the answers, the clean inputs classified locally.

``epsilon = inf`` is the no-noise reference: standard is then the cloud on clean
inputs, and LDPKiT is model extraction from clean queries (no release exists,
nothing is charged). Each method gets its own ledger, so every input is released
exactly once per method and per epsilon, never twice.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from noiseforge._common.files import atomic_write_text, pyplot, save_figure
from noiseforge.ldp.cloud import CloudModel, InProcessCloud
from noiseforge.ldp.ledger import PrivacyLedger
from noiseforge.ldp.models import accuracy, predict_labels, predict_proba, train_classifier
from noiseforge.ldp.pipeline import NoiseSpec, ldpkit, standard_ldp

DEFAULT_EPSILONS = (1.0, 2.0, 4.0, 7.0, 10.0, 15.0, math.inf)


@dataclass
class Settings:
    """LDPKiT's knobs (layer 2 and the local model); the defaults are the tuned ones."""

    noise_copies: int = 2
    superimposed: float = 1.0
    weight: float = 0.5
    targets: str = "answers"
    epochs: int | None = None  # None: the task's own default
    batch_size: int = 128
    schedule: str = "constant"  # the local model's learning rate: "constant" or "cosine"


@dataclass
class Setup:
    """What one experiment needs: the cloud, the private inputs and a local model factory."""

    name: str
    description: str
    cloud: nn.Module
    x: torch.Tensor  # (N, ...) private inputs, features in [lower, upper]
    y: torch.Tensor  # (N,) their true labels (for scoring only; never used by the methods)
    lower: float
    upper: float
    make_model: Callable[[], nn.Module]
    unit_name: str = "feature"
    local_epochs: int = 4  # the local model's epochs when Settings.epochs is None
    #: a cloud reached over the network (e.g. ``HTTPCloud``); when set, the methods
    #: query it instead of ``cloud``, and the clean / eps = inf references (which
    #: need un-noised inputs the client refuses to send) are not measured
    remote: CloudModel | None = None

    @property
    def features(self) -> int:
        return int(np.prod(self.x.shape[1:]))


@dataclass
class Point:
    """Accuracies at one epsilon (per feature) and what it cost."""

    epsilon: float
    epsilon_per_input: float
    clean: float  # NaN when not measured (a remote cloud)
    standard: float
    ldpkit: float
    queries: int
    seconds: float

    @property
    def gain(self) -> float:
        return self.ldpkit - self.standard


@dataclass(frozen=True)
class Engine:
    """Where :func:`run_point` runs the two methods: ``standard_ldp`` and ``ldpkit``
    with the signatures of :mod:`noiseforge.ldp.pipeline`, and ``new_ledger(budget)``
    for each method's own ledger. :data:`LOCAL` (this process) is the default; the
    command line builds the Ray engine (``noiseforge.distributed.engine``)."""

    name: str = "local"
    standard_ldp: Callable[..., torch.Tensor] = standard_ldp
    ldpkit: Callable[..., Any] = ldpkit
    new_ledger: Callable[[float], PrivacyLedger] = PrivacyLedger


LOCAL = Engine()


def task_setup(
    name: str = "fashion", limit: int | None = None, *, progress: bool = True, seed: int = 0
) -> Setup:
    """The experiment of an LDPKiT task (:func:`noiseforge.ldp.tasks.get_task`): its
    cloud model trained on the cloud's split (cached on disk), the private inputs
    (the first ``limit`` of them when given) and the local model factory."""
    from noiseforge.ldp.tasks import get_task, task_cloud_model

    if limit is not None and limit < 2:
        raise ValueError(f"limit must be at least 2 (superimposition mixes pairs), got {limit}")
    try:
        task = get_task(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    cloud = task_cloud_model(task, seed=seed, progress=progress)
    x, y = task.x_private[:limit], task.y_private[:limit]
    description = task.description
    if limit is not None and limit < len(task.x_private):
        description += f"; the first {len(x)} private inputs"
    return Setup(
        name=task.name,
        description=description,
        cloud=cloud,
        x=x,
        y=y,
        lower=task.lower,
        upper=task.upper,
        make_model=task.make_model,
        unit_name="pixel" if len(task.input_shape) >= 2 else "feature",
        local_epochs=task.local_epochs,
    )


def run_point(
    setup: Setup,
    epsilon: float,
    settings: Settings | None = None,
    *,
    seed: int | None = None,
    progress: bool = True,
    engine: Engine | None = None,
) -> Point:
    """Standard eps-LDP and LDPKiT at ``epsilon`` per feature (Laplace, pure eps-LDP),
    run by ``engine`` (default :data:`LOCAL`)."""
    if not (epsilon > 0):
        raise ValueError(f"epsilon must be > 0 (or inf for the no-noise reference), got {epsilon}")
    settings = settings or Settings()
    engine = engine or LOCAL
    t0 = time.perf_counter()
    x, y = setup.x, setup.y
    if setup.remote is not None and math.isinf(epsilon):
        raise ValueError(
            "epsilon = inf needs clean inputs, which are never sent to a remote cloud; "
            "drop inf from the epsilons or use the in-process cloud"
        )
    clean = accuracy(setup.cloud, x, y) if setup.remote is None else math.nan
    cloud = setup.remote if setup.remote is not None else InProcessCloud(setup.cloud)
    if math.isinf(epsilon):
        standard = clean
        predictions, queries = _extraction(setup, settings, seed=seed, progress=progress)
    else:
        noise = NoiseSpec(epsilon=epsilon, lower=setup.lower, upper=setup.upper)
        records = np.arange(len(x))
        budget = epsilon * setup.features
        std = engine.standard_ldp(
            x, records, cloud, engine.new_ledger(budget), noise, seed=seed, progress=progress
        )
        standard = float((std == y).float().mean())
        kit = engine.ldpkit(
            x,
            records,
            cloud,
            engine.new_ledger(budget),
            noise,
            setup.make_model,
            noise_copies=settings.noise_copies,
            superimposed=settings.superimposed,
            weight=settings.weight,
            targets=settings.targets,
            epochs=setup.local_epochs if settings.epochs is None else settings.epochs,
            batch_size=settings.batch_size,
            schedule=settings.schedule,
            seed=None if seed is None else seed + 1000,
            progress=progress,
        )
        predictions, queries = kit.predictions, kit.queries
    return Point(
        epsilon=float(epsilon),
        epsilon_per_input=float(epsilon) * setup.features,
        clean=clean,
        standard=standard,
        ldpkit=float((predictions == y).float().mean()),
        queries=int(queries),
        seconds=time.perf_counter() - t0,
    )


def _extraction(
    setup: Setup, settings: Settings, *, seed: int | None, progress: bool
) -> tuple[torch.Tensor, int]:
    """eps = inf: the local model learns the cloud's answers on clean inputs (and
    superimposed clean pairs) -- model extraction, the no-privacy end of LDPKiT."""
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    x = setup.x.float()
    pairs = round(settings.superimposed * len(x))
    a = torch.randint(0, len(x), (pairs,), generator=gen)
    b = torch.randint(0, len(x), (pairs,), generator=gen)
    w = settings.weight
    queries = torch.cat([x, w * x[a] + (1 - w) * x[b]])
    answers = predict_proba(setup.cloud, queries)
    local = setup.make_model()
    train_classifier(
        local,
        queries,
        answers,
        epochs=setup.local_epochs if settings.epochs is None else settings.epochs,
        batch_size=settings.batch_size,
        schedule=settings.schedule,
        seed=0 if seed is None else seed,
        progress=progress,
        desc="local model",
    )
    return predict_labels(local, x), len(queries)


def sweep(
    setup: Setup,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    settings: Settings | None = None,
    *,
    seed: int | None = None,
    progress: bool = True,
    on_point: Callable[[Point], None] | None = None,
    engine: Engine | None = None,
) -> list[Point]:
    """:func:`run_point` at every epsilon, in the order given (by ``engine``)."""
    if not epsilons:
        raise ValueError("give at least one epsilon")
    points = []
    for i, eps in enumerate(epsilons):
        point = run_point(
            setup,
            eps,
            settings,
            seed=None if seed is None else seed + 10 * i,
            progress=progress,
            engine=engine,
        )
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points


def parse_epsilons(text: str) -> list[float]:
    """``"1,2,4,7,inf"`` -> [1.0, 2.0, 4.0, 7.0, inf] (clear error on anything else)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        try:
            value = math.inf if part in ("inf", "infinity") else float(part)
        except ValueError:
            raise ValueError(
                f"cannot read epsilon {part!r} in {text!r}: give numbers > 0 separated by "
                "commas, e.g. 1,2,4,7,inf"
            ) from None
        if not value > 0:
            raise ValueError(f"epsilon must be > 0, got {part!r} in {text!r}")
        out.append(value)
    return out


def _fmt_eps(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def markdown_table(points: Sequence[Point], unit: str = "feature") -> str:
    lines = [
        f"| eps per {unit} | eps per input | cloud on clean inputs | standard eps-LDP | LDPKiT "
        "| LDPKiT - standard | cloud queries | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {_fmt_eps(p.epsilon)} | {_fmt_eps(p.epsilon_per_input)} | "
            f"{'n/a' if math.isnan(p.clean) else f'{p.clean:.3f}'} | "
            f"{p.standard:.3f} | {p.ldpkit:.3f} | {100 * p.gain:+.1f} pts | {p.queries} | "
            f"{p.seconds:.0f} |"
        )
    return "\n".join(lines)


def write_report(
    points: Sequence[Point],
    out_dir: str | os.PathLike,
    *,
    setup: Setup,
    settings: Settings,
    seed: int | None,
) -> dict[str, Path]:
    """results.md / results.csv / results.json and, when matplotlib is installed,
    accuracy.png in ``out_dir``. Files of these names are replaced; nothing else
    in the folder is touched."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    header = (
        f"# LDPKiT vs standard eps-LDP: {setup.name}\n\n{setup.description}.\n"
        f"Laplace noise per {setup.unit_name}; each input released once per method "
        f"(eps per input = eps per {setup.unit_name} x {setup.features}, basic composition). "
        f"LDPKiT settings: {asdict(settings)}; seed: "
        f"{'secret (OS randomness)' if seed is None else f'{seed} (reproducible, not private)'}.\n\n"
    )
    rows = [dict(asdict(p), gain=p.gain) for p in points]
    paths["md"] = atomic_write_text(
        out / "results.md", header + markdown_table(points, setup.unit_name) + "\n"
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    paths["csv"] = atomic_write_text(out / "results.csv", buf.getvalue())
    meta = dict(
        task=setup.name, description=setup.description, settings=asdict(settings), seed=seed
    )
    paths["json"] = atomic_write_text(
        out / "results.json", json.dumps(dict(meta, points=rows), indent=2, default=str) + "\n"
    )
    png = plot(
        points,
        out / "accuracy.png",
        title=f"LDPKiT vs standard eps-LDP ({setup.name})",
        unit=setup.unit_name,
    )
    if png is not None:
        paths["png"] = png
    return paths


def plot(points: Sequence[Point], path: Path, *, title: str, unit: str) -> Path | None:
    """Accuracy against epsilon (log axis; inf drawn at the right edge). None when
    matplotlib is missing (``pip install matplotlib``)."""
    plt = pyplot()
    if plt is None:
        return None
    finite = [p.epsilon for p in points if not math.isinf(p.epsilon)]
    right = (max(finite) * 2) if finite else 1.0
    xs = [right if math.isinf(p.epsilon) else p.epsilon for p in points]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, label, style in (
        ("clean", "cloud on clean inputs", "k--"),
        ("ldpkit", "LDPKiT (local model)", "o-"),
        ("standard", "standard eps-LDP", "s-"),
    ):
        ax.plot(xs, [getattr(p, key) for p in points], style, label=label)
    ax.set_xscale("log")
    ticks = sorted(set(xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [
            "inf" if t == right and any(math.isinf(p.epsilon) for p in points) else f"{t:g}"
            for t in ticks
        ]
    )
    ax.set_xlabel(f"epsilon per {unit} (Laplace)")
    ax.set_ylabel("accuracy on the private inputs")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
