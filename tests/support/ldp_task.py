"""A small generated LDPKiT task: three classes of 16-pixel images, and an MLP for it."""

from __future__ import annotations

import torch


def band_task(n, seed):
    """3 classes of 16-pixel 'images': each class lights a different band of pixels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 16, generator=g) * 0.4
    for c in range(3):
        x[y == c, c * 5 : c * 5 + 5] += 0.6
    return x.clamp(0, 1), y


def band_mlp():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
