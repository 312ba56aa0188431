"""``noiseforge ldp run|sweep``: LDPKiT against standard eps-LDP from the command line;
``noiseforge ldp ledger ...``: a shared privacy ledger (see ``ldp.ledger.command``)."""

from __future__ import annotations

import argparse
import math
import time

from noiseforge._common import argtypes
from noiseforge.ldp import experiment as ex
from noiseforge.ldp.cloud import CloudQueryError
from noiseforge.ldp.ledger import command as ledger_command

TASKS = ("fashion", "digits", "mnist5k", "text")
ENGINES = argtypes.ENGINES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ldp_command", required=True)
    run = sub.add_parser("run", help="LDPKiT vs standard eps-LDP at one epsilon")
    run.add_argument(
        "--epsilon",
        type=argtypes.number(0, allow_inf=True, what="inf: the no-noise reference"),
        default=7.0,
        help="per feature (default 7; inf = the no-noise reference)",
    )
    sweep = sub.add_parser("sweep", help="LDPKiT vs standard eps-LDP over epsilons: table + plot")
    sweep.add_argument(
        "--epsilons",
        type=_epsilons,
        default=",".join(ex._fmt_eps(e) for e in ex.DEFAULT_EPSILONS),
        help="comma-separated, per feature; inf = the no-noise reference (default %(default)s)",
    )
    ledger_command.add_arguments(
        sub.add_parser("ledger", help="show, verify or import a privacy ledger (SQLite/PostgreSQL)")
    )
    for p in (run, sweep):
        p.add_argument("--task", default="fashion", choices=TASKS, help="data set and cloud model")
        p.add_argument(
            "--limit",
            type=argtypes.int_at_least(2, "superimposition mixes pairs"),
            default=None,
            help="use only the first N private inputs (N >= 2)",
        )
        d = ex.Settings()
        p.add_argument(
            "--copies",
            type=argtypes.int_at_least(0),
            default=d.noise_copies,
            help="layer-2 noise copies per input",
        )
        p.add_argument(
            "--superimposed",
            type=argtypes.number(0, low_open=False),
            default=d.superimposed,
            help="superimposed pairs as a fraction of the inputs",
        )
        p.add_argument(
            "--epochs",
            type=argtypes.int_at_least(1),
            default=None,
            help="local model epochs (default: the task's)",
        )
        p.add_argument(
            "--targets",
            default=d.targets,
            choices=["answers", "aggregated"],
            help="train on each query's answer, or on the mean answer over an input's copies",
        )
        argtypes.add_seed(p)
        argtypes.add_out_folder(
            p,
            "folder for results.md/.csv/.json and accuracy.png "
            "(default noiseforge-out/ldp-<task>-<run|sweep>)",
        )
        p.add_argument(
            "--cloud-url",
            type=_cloud_url,
            default=None,
            help="query a cloud served over HTTP (noiseforge cloud serve) instead of the "
            "in-process model; only noised inputs are sent, so the clean reference is not measured",
        )
        p.add_argument(
            "--threads",
            type=argtypes.int_at_least(1),
            default=None,
            help="torch CPU threads for the models (default: torch's choice); on a machine "
            "busy with other work, 1 avoids spinning threads that slow small models down",
        )
        argtypes.add_engine(
            p, "a Ray Data job on the cluster of --ray-address, one privacy ledger for every worker"
        )
        argtypes.add_quiet(p)


def _epsilons(text: str) -> list[float]:
    try:
        return ex.parse_epsilons(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cloud_url(text: str) -> str:
    from noiseforge.ldp.http import HTTPCloud

    try:
        HTTPCloud(text)  # parses the URL only: nothing is sent
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; e.g. http://127.0.0.1:8000") from None
    return text


def _reachable_cloud(url: str):
    """An HTTPCloud for ``url`` once its health check answers, else CommandError (exit 1)."""
    from noiseforge.ldp.cloud import CloudUnavailableError
    from noiseforge.ldp.http import HTTPCloud

    try:
        HTTPCloud(url, timeout=15).health()
    except (CloudUnavailableError, OSError) as exc:
        raise argtypes.CommandError(
            f"cannot reach the cloud at {url} ({exc}): start it with 'noiseforge cloud serve' "
            "or correct --cloud-url"
        ) from None
    return HTTPCloud(url)


def run(args: argparse.Namespace, engine: ex.Engine | None = None) -> int:
    """Run the parsed command; ``engine`` runs the methods (default the local one; the
    command line passes the Ray engine for ``--engine ray``)."""
    if args.ldp_command == "ledger":
        return ledger_command.run(args)
    argtypes.check_engine(args, engine, "noiseforge.distributed.engine.ldp_engine()")
    t0 = time.perf_counter()
    progress = not args.quiet
    settings = ex.Settings(
        noise_copies=args.copies,
        superimposed=args.superimposed,
        epochs=args.epochs,
        targets=args.targets,
    )
    if args.ldp_command == "run":
        epsilons = [args.epsilon]
    else:
        epsilons = args.epsilons
        if isinstance(epsilons, str):  # a Namespace built without the parser
            epsilons = ex.parse_epsilons(epsilons)
    if any(not e > 0 for e in epsilons):
        raise argtypes.UsageError(f"epsilon must be > 0, got {epsilons}")
    if args.cloud_url and any(math.isinf(e) for e in epsilons):
        raise argtypes.UsageError(
            "epsilon = inf needs clean inputs, which are never sent to a remote cloud: "
            "drop inf from --epsilons when using --cloud-url"
        )
    out = args.out or f"noiseforge-out/ldp-{args.task}-{args.ldp_command}"
    why = argtypes.folder_problem(out)
    if why:  # found before the work, not after it
        raise argtypes.CommandError(f"cannot write the report: {why}; choose a writable --out")
    remote = _reachable_cloud(args.cloud_url) if args.cloud_url else None
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    setup = ex.task_setup(args.task, args.limit, progress=progress)
    if remote is not None:
        setup.remote = remote
        setup.description += f"; queries go to the cloud at {args.cloud_url}"
    print(f"noiseforge ldp {args.ldp_command}: {setup.description}")

    def show(p: ex.Point) -> None:
        clean = "n/a" if math.isnan(p.clean) else f"{p.clean:.3f}"
        print(
            f"  eps {ex._fmt_eps(p.epsilon):>4} per {setup.unit_name}: clean {clean}  "
            f"standard {p.standard:.3f}  LDPKiT {p.ldpkit:.3f}  ({100 * p.gain:+.1f} pts, "
            f"{p.seconds:.0f} s)",
            flush=True,
        )

    try:
        points = ex.sweep(
            setup,
            epsilons,
            settings,
            seed=args.seed,
            progress=progress,
            on_point=show,
            engine=engine,
        )
    except CloudQueryError as exc:
        if remote is None:
            raise
        raise argtypes.CommandError(
            f"{exc}; check that the cloud at {args.cloud_url} still runs "
            "(noiseforge cloud serve), then run again"
        ) from None
    paths = ex.write_report(points, out, setup=setup, settings=settings, seed=args.seed)
    print()
    print(ex.markdown_table(points, setup.unit_name))
    print()
    print("written: " + ", ".join(str(p) for p in paths.values()))
    if "png" not in paths:
        print("(no plot: matplotlib is not installed; pip install matplotlib)")
    if any(math.isinf(p.epsilon) for p in points):
        print("eps inf: no noise; LDPKiT there is model extraction from clean queries")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0
