"""Models of the LDPKiT experiments: the cloud's CNN and the client's local model,
and one training loop for hard or soft (probability) targets."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from noiseforge._common.files import atomic_write
from noiseforge._common.paths import default_cache_dir
from noiseforge._progress import progress_bar


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head for (N, C, H, W) images; the cloud model of the
    Fashion-MNIST experiments (about 0.9 test accuracy after a few epochs)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * (size // 4) ** 2, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )
        self.size = size
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat pixels
            x = x.reshape(-1, self.in_channels, self.size, self.size)
        elif x.dim() == 3:  # (N, H, W)
            x = x.unsqueeze(1)
        return self.head(self.features(x.float()))


def check_training_inputs(x: Any, targets: Any, schedule: str) -> None:
    """What :func:`train_classifier` refuses, checked on arrays or tensors alike (a
    distributed trainer checks it before starting its workers)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if x.shape[0] != targets.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {targets.shape[0]} targets")
    if x.shape[0] == 0:
        raise ValueError("nothing to train on")


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    schedule: str = "constant",
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
    part: tuple[int, int] = (0, 1),
) -> list[float]:
    """Adam on cross-entropy. ``targets``: (N,) class ids or (N, C) probabilities
    (soft labels, e.g. aggregated cloud answers). ``schedule``: ``"constant"`` or
    ``"cosine"`` (the learning rate decays to 0 over all steps). Returns the mean
    loss per epoch.

    ``part=(rank, world)``: data-parallel training (``model`` wrapped in
    DistributedDataParallel, which averages the gradients of the ``world`` processes).
    Every process draws the same batches and computes the loss of rows
    ``rank::world`` of each, scaled so that the averaged gradient is the whole batch's
    mean-loss gradient: the same steps as one process, up to float rounding (a model
    with batch norm sees only its process's rows). The losses returned are this
    process's share, scaled the same way."""
    check_training_inputs(x, targets, schedule)
    rank, world = part
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise ValueError(f"part must be (rank, world) with 0 <= rank < world, got {part!r}")
    soft = targets.is_floating_point()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total_steps = epochs * -(-x.shape[0] // batch_size)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
        if schedule == "cosine"
        else None
    )
    model.train()
    losses = []
    steps = range(0, x.shape[0], batch_size)
    bar = progress_bar(total=epochs * len(steps), desc=desc, enabled=progress, unit="batches")
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        total, batches = 0.0, 0
        bar.set_postfix_str(f"epoch {epoch + 1}/{epochs}")
        for s in steps:
            idx = order[s : s + batch_size]
            if world == 1:
                logits = model(x[idx])
                t = targets[idx]
                if soft:
                    loss = -(t * torch.log_softmax(logits, dim=1)).sum(1).mean()
                else:
                    loss = nn.functional.cross_entropy(logits, t)
            else:
                mine = idx[rank::world]  # may be empty: the process still joins the step
                logits = model(x[mine])
                t = targets[mine]
                if soft:
                    summed = -(t * torch.log_softmax(logits, dim=1)).sum()
                else:
                    summed = nn.functional.cross_entropy(logits, t, reduction="sum")
                loss = summed * (world / len(idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach())
            batches += 1
            bar.update(1)
        losses.append(total / batches)
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(N, C) float32 softmax of ``model`` on ``x`` in batches (eval mode); (0, 0) for no rows."""
    model.eval()
    parts = [
        torch.softmax(model(x[s : s + batch_size].float()), dim=1).float()
        for s in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(parts) if parts else torch.zeros((0, 0))


@torch.no_grad()
def predict_labels(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(N,) int64 argmax class of ``model`` on ``x`` in batches (eval mode)."""
    model.eval()
    parts = [model(x[s : s + batch_size]).argmax(1) for s in range(0, x.shape[0], batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def accuracy(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024
) -> float:
    correct = int((predict_labels(model, x, batch_size) == labels).sum())
    return correct / max(1, x.shape[0])


def cached_model(
    name: str,
    build,
    train,
    *,
    key: str,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> nn.Module:
    """A model trained once and cached on disk by ``key`` (data + hyper-parameters).

    ``build()`` makes an untrained model, ``train(model)`` trains it in place.
    A cache file that fails to load is retrained and replaced (written atomically).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = folder / f"{name}-{digest}.pt"
    model = build()
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError):
            pass  # stale or damaged: retrain below
    train(model)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    atomic_write(path, lambda fh: torch.save(state, fh), mode=0o666)
    return model.eval()
