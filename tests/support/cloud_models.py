"""Models for the cloud server tests, importable as ``--model tests.support.cloud_models:NAME``."""

from __future__ import annotations

import time

import torch
from torch import nn

SHAPE = (1, 6, 6)  # one row: a 6x6 single-channel image (36 values flat)


class TinyCNN(nn.Module):
    """A seeded conv + linear classifier of (N, 1, 6, 6) images into 5 classes."""

    input_shape = SHAPE

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 36, 5)
        self.delay = delay
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.head(torch.relu(self.conv(x)).flatten(1))


def tiny() -> nn.Module:
    return TinyCNN()


def slow() -> nn.Module:
    """50 ms per model call, whatever its size (batching pays)."""
    return TinyCNN(delay=0.05)


class Broken(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:  # the start-up probe (one row) passes
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (secret internals)")
        return super().forward(x)


class NaNs(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * float("nan") if x.shape[0] > 1 else out


def broken() -> nn.Module:
    return Broken()


def nans() -> nn.Module:
    return NaNs()


class Poisoned(TinyCNN):
    """NaN scores for the rows whose first value is 99 (one client's rows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        bad = x.reshape(len(x), -1)[:, 0] == 99
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def poisoned() -> nn.Module:
    return Poisoned(delay=0.05)
