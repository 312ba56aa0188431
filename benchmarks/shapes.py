"""Shapes and peers shared by the benchmark suites."""

from __future__ import annotations

import torch

# The target shape: (1024, 3072) float32 inputs (CIFAR-sized rows), K = 8 copies.
CPU_SHAPE = (1024, 3072)
CPU_COPIES = 8
# On a GPU the same rows, scaled up so the launch is bandwidth-bound.
GPU_SHAPE = (16384, 3072)
GPU_COPIES = 8
EPSILON = 2.0


def torch_laplace_peer(x: torch.Tensor, copies: int, epsilon: float) -> torch.Tensor:
    """What a user writes without noiseforge: sample, add, clamp (domain [0, 1])."""
    b = 1.0 / epsilon
    noise = torch.distributions.Laplace(
        torch.tensor(0.0, device=x.device), torch.tensor(b, device=x.device)
    ).sample((x.shape[0], copies, *x.shape[1:]))
    return (x.clamp(0.0, 1.0).unsqueeze(1) + noise).clamp_(0.0, 1.0)


def torch_gaussian_peer(x: torch.Tensor, copies: int, sigma: float) -> torch.Tensor:
    noise = torch.randn((x.shape[0], copies, *x.shape[1:]), device=x.device) * sigma
    return (x.clamp(0.0, 1.0).unsqueeze(1) + noise).clamp_(0.0, 1.0)


def bytes_moved(x: torch.Tensor, copies: int, out_itemsize: int = 4) -> int:
    """Minimum traffic of the fused op: read x once, write N*K*D outputs."""
    return x.numel() * x.element_size() + x.numel() * copies * out_itemsize
