"""``noiseforge demo``: the main job on embedded default data, in parts.

- ``noise``: the fused LDP noise op end to end on Fashion-MNIST: every test
  image is released as K noisy copies, the backends are cross-checked on the
  same random words, and a nearest-centroid classifier fitted on the clean
  training split shows what the noise costs in accuracy;
- ``ldpkit``: LDPKiT against standard eps-LDP at one epsilon on the 10k
  Fashion-MNIST test images (the cloud CNN is trained once and cached);
- ``relevance``: the relevance engine's ablation (baseline, +translation,
  +semantic negatives, +filtering, +threshold) on competition files given with
  ``--relevance-data``, else on a generated multilingual fixture (labelled so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from noiseforge._common import argtypes
from noiseforge.data import DatasetNotFoundError, load_fashion_mnist
from noiseforge.ops import ldp_noise, ldp_noise_calibration, registry
from noiseforge.ops.ldp_noise import plan_ldp_noise

PARTS = ("noise", "ldpkit", "relevance")
#: the parts that need Fashion-MNIST; the others run without it
NEEDS_FASHION_MNIST = ("noise", "ldpkit")
RELEVANCE_OUT = "noiseforge-out/demo-relevance"
BACKENDS = ("auto", "torch", "cpu", "cuda", "triton")


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown demo part(s) {unknown or text!r}; choose from {', '.join(PARTS)}"
        )
    return parts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--parts",
        type=_parts,
        default=",".join(PARTS),
        help="comma-separated parts to run, in order (default %(default)s); a part whose "
        "data is not installed is skipped with the install command, and the demo then "
        "exits with status 1",
    )
    p.add_argument(
        "--epsilon",
        type=argtypes.number(0),
        default=7.0,
        help="per-pixel epsilon (default 7)",
    )
    p.add_argument(
        "--copies",
        type=argtypes.int_at_least(1),
        default=4,
        help="noise part: noisy copies per image (default 4)",
    )
    p.add_argument(
        "--mechanism", default="laplace", choices=["laplace", "gaussian", "discrete_laplace"]
    )
    p.add_argument(
        "--delta",
        type=argtypes.number(0, 1, high_open=True),
        default=None,
        help="delta for the Gaussian mechanism (default 1e-5)",
    )
    p.add_argument(
        "--limit",
        type=argtypes.int_at_least(1),
        default=None,
        help="use only the first N test images (the ldpkit part needs N >= 2)",
    )
    p.add_argument(
        "--relevance-data",
        type=argtypes.existing_path,
        default=None,
        help="relevance part: a competition file or a folder of them (*.jsonl, *.csv, "
        "*.parquet); default: a generated fixture",
    )
    argtypes.add_quiet(p)
    p.add_argument("--backend", default=None, choices=BACKENDS, help="default auto")
    argtypes.add_seed(p)


def _centroids(images: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images.reshape(len(images), -1)).float() / 255.0
    y = torch.from_numpy(labels)
    return torch.stack([x[y == c].mean(0) for c in range(10)])


def _accuracy(cent: torch.Tensor, x: torch.Tensor, labels: np.ndarray) -> float:
    pred = torch.cdist(x.float(), cent).argmin(1)
    return float((pred == torch.from_numpy(labels)).float().mean())


def fashion_mnist_missing() -> str | None:
    """Why Fashion-MNIST cannot be read (one line with the install command), or None."""
    from noiseforge.data import fashion_mnist as fm

    base = Path(os.environ.get(fm.ENV_ROOT) or fm.DEFAULT_ROOT)
    for names in fm._FILES.values():
        for name in names:
            if not ((base / name).exists() or (base / f"{name}.gz").exists()):
                return (
                    f"Fashion-MNIST is not installed ({base / name}.gz not found): install it "
                    f"with 'apt-get install dataset-fashion-mnist' or set {fm.ENV_ROOT}=<folder "
                    "with its IDX files>"
                )
    return None


def run(args: argparse.Namespace) -> int:
    from noiseforge.ldp.tasks import MissingTaskDataError

    parts = _parts(args.parts) if isinstance(args.parts, str) else list(args.parts)
    if "ldpkit" in parts and args.mechanism != "laplace":
        raise argtypes.UsageError(
            "the ldpkit part uses Laplace noise (the paper's setting); drop --mechanism"
        )
    if "ldpkit" in parts and args.limit is not None and args.limit < 2:
        raise argtypes.UsageError(
            f"--limit must be at least 2 for the ldpkit part, got {args.limit}"
        )
    if args.delta is not None and args.mechanism != "gaussian":
        raise argtypes.UsageError(
            f"--delta applies to --mechanism gaussian only ({args.mechanism} is pure "
            "eps-LDP): drop --delta"
        )
    if "relevance" in parts:
        _relevance_files(args)  # a bad --relevance-data is found before any part runs
        why = argtypes.folder_problem(RELEVANCE_OUT)
        if why:  # found before the work, not after it
            raise argtypes.CommandError(
                f"cannot write the relevance report: {why}; run the demo in a writable folder"
            )
    runners = {"noise": _noise_part, "ldpkit": _ldpkit_part, "relevance": _relevance_part}
    t0 = time.perf_counter()
    ran, skipped = [], []
    for part in parts:
        why = fashion_mnist_missing() if part in NEEDS_FASHION_MNIST else None
        if why is None:
            if ran:
                print()
            try:
                runners[part](args)
            except (DatasetNotFoundError, MissingTaskDataError) as exc:
                why = argtypes.one_line(str(exc))
            else:
                ran.append(part)
        if why is not None:
            skipped.append(part)
            print(f"noiseforge demo: skipped the {part} part: {why}", file=sys.stderr, flush=True)
    took = f"{time.perf_counter() - t0:.0f} s"
    if skipped:
        print(
            f"noiseforge demo: ran {', '.join(ran) or 'no part'} in {took}; skipped "
            f"{', '.join(skipped)} (install what is named above, then run "
            f"'noiseforge demo --parts {','.join(skipped)}')",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(f"\nnoiseforge demo: done in {took}")
    return 0


def _ldpkit_part(args: argparse.Namespace) -> None:
    from noiseforge.ldp import experiment as ex

    print("noiseforge demo: LDPKiT vs standard eps-LDP on Fashion-MNIST", flush=True)
    setup = ex.task_setup("fashion", args.limit, progress=not args.quiet)
    point = ex.run_point(setup, args.epsilon, seed=args.seed, progress=not args.quiet)
    rows = [
        ("data", setup.description),
        (
            "privacy",
            f"Laplace, epsilon {args.epsilon:g} per pixel = {point.epsilon_per_input:g} per image "
            "(basic composition over 784 pixels), each image released once per method. Per "
            "image this bound is far too loose to hide which image was sent; what the noise "
            "hides in practice is fine detail of each pixel (the paper's setting).",
        ),
        ("cloud, clean", f"{point.clean:.3f} (no privacy: the ceiling)"),
        ("standard eps-LDP", f"{point.standard:.3f} (the cloud's answer on the noised image)"),
        (
            "LDPKiT",
            f"{point.ldpkit:.3f} (local CNN trained on {point.queries} noised queries' answers, "
            "then run on the private images locally)",
        ),
        ("LDPKiT - standard", f"{100 * point.gain:+.1f} points"),
        (
            "seed",
            "secret (OS randomness)"
            if args.seed is None
            else f"{args.seed} (reproducible, not private)",
        ),
        ("time", f"{point.seconds:.0f} s"),
    ]
    _print_rows(rows)
    print("  (an epsilon sweep with a plot: noiseforge ldp sweep)")


def _relevance_files(args: argparse.Namespace) -> list[str]:
    """The competition files of ``--relevance-data`` ([] for the generated fixture)."""
    if not args.relevance_data:
        return []
    root = Path(args.relevance_data)
    if not root.is_dir():
        return [str(root)]
    files = sorted(
        str(p) for ext in ("*.jsonl", "*.json", "*.csv", "*.parquet") for p in root.glob(ext)
    )
    if not files:
        raise argtypes.UsageError(
            f"--relevance-data {root} holds no *.jsonl, *.json, *.csv or *.parquet files: "
            "give a file or a folder of competition files"
        )
    return files


def _relevance_part(args: argparse.Namespace) -> None:
    from noiseforge.relevance.pipeline import RunConfig, run

    files = _relevance_files(args)
    print("noiseforge demo: the relevance data engine (QC and QI)", flush=True)
    cfg = RunConfig(
        data=files,
        out=RELEVANCE_OUT,
        seed=0 if args.seed is None else args.seed,
    )
    result = run(cfg, progress=not args.quiet, echo=lambda line: print(f"  {line}", flush=True))
    print()
    print(result.markdown)
    print("\n  each data rung at its own dev-tuned threshold:\n")
    print(result.markdown_tuned)
    print(f"  (F1 of the positive class [95 % interval]; report in {cfg.out}/report.md)")


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def _noise_part(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test", limit=args.limit)
    n = len(test_x)
    cent = _centroids(train_x, train_y)
    delta = (args.delta or 1e-5) if args.mechanism == "gaussian" else args.delta
    kwargs = dict(
        epsilon=args.epsilon,
        lower=0.0,
        upper=1.0,
        mechanism=args.mechanism,
        copies=args.copies,
        delta=delta,
    )
    x = torch.from_numpy(test_x).float() / 255.0  # pixels on [0, 1], the LDPKiT setting
    if args.mechanism == "discrete_laplace":
        kwargs.update(lower=0, upper=255)
        x = torch.from_numpy(test_x)  # uint8 pixels on their own integer grid
    cal = ldp_noise_calibration(x, **kwargs)
    backend = registry.select(
        "ldp_noise", args.backend, plan_ldp_noise(x[:1], **kwargs), x.device.type
    ).name

    start = time.perf_counter()
    y = ldp_noise(x, seed=args.seed, backend=args.backend, **kwargs)
    elapsed = time.perf_counter() - start

    # backend check on synthetic data of the same shape, never on the private images:
    # a second release of them would spend their privacy budget again
    check = min(n, 64)
    probe = torch.rand((check, *x.shape[1:]), generator=torch.Generator().manual_seed(0))
    if x.dtype == torch.uint8:
        probe = (probe * 255).to(torch.uint8)
    a = ldp_noise(probe, seed=20261124, offset=0, backend=args.backend, **kwargs)
    b = ldp_noise(probe, seed=20261124, offset=0, backend="torch", **kwargs)
    agree = (
        "bit-identical"
        if torch.equal(a, b)
        else f"max |diff| {float((a.float() - b.float()).abs().max()):.3g}"
    )

    scale = 255.0 if y.dtype == torch.uint8 else 1.0
    flat = y.reshape(n, args.copies, -1).float() / scale
    clean = x.reshape(n, -1).float() / scale
    acc_clean = _accuracy(cent, clean, test_y)
    acc_one = _accuracy(cent, flat[:, 0], test_y)
    acc_mean = _accuracy(cent, flat.mean(1), test_y)
    mae = float((flat - clean.unsqueeze(1)).abs().mean())

    rows = [
        ("data", f"Fashion-MNIST test split, {n} images of 28x28 (centroids from 60k train)"),
        (
            "mechanism",
            f"{args.mechanism}, epsilon {args.epsilon:g} per pixel, {args.copies} copies",
        ),
        ("guarantee", cal.guarantee),
        ("backend", f"{backend} (auto)" if args.backend in (None, "auto") else backend),
        (
            "throughput",
            f"{y.numel():,} noisy values in {elapsed * 1e3:.1f} ms "
            f"({y.numel() / elapsed / 1e6:.1f} M values/s)",
        ),
        ("backends agree", f"{backend} vs torch reference on {check} synthetic images: {agree}"),
        ("mean |noise|", f"{mae:.3f} (pixels on [0, 1], after clamping)"),
        ("accuracy clean", f"{acc_clean:.3f}"),
        (
            "accuracy noisy",
            f"{acc_one:.3f} (one copy)   {acc_mean:.3f} (mean of {args.copies} copies, "
            "whose budgets add up in the guarantee above)",
        ),
        (
            "seed",
            "secret (OS randomness)"
            if args.seed is None
            else f"{args.seed} (reproducible, not private)",
        ),
        ("total time", f"{time.perf_counter() - t0:.1f} s"),
    ]
    print("noiseforge demo: fused LDP noise on Fashion-MNIST")
    _print_rows(rows)
