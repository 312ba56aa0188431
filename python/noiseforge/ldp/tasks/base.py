"""What every LDPKiT task is: :class:`LDPTask`, the error of a task whose data is
missing, and the seeded stratified split the image tasks share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class LDPTask:
    """One LDPKiT experiment's data and model family.

    ``x_cloud_train`` (Nc, F) / ``y_cloud_train`` (Nc,) int64: the cloud's training
    set; ``x_private`` (Np, F) / ``y_private`` (Np,): the client's inputs and their
    true labels (never sent anywhere; used to score); features lie in
    ``[lower, upper]`` (the noise's domain); ``make_model()`` builds an untrained
    model that takes (N, F) rows and returns (N, num_classes) logits (its
    initialisation follows torch's global seed: call ``torch.manual_seed`` first to
    reproduce it).
    """

    name: str
    x_cloud_train: torch.Tensor
    y_cloud_train: torch.Tensor
    x_private: torch.Tensor
    y_private: torch.Tensor
    num_classes: int
    lower: float
    upper: float
    make_model: Callable[[], nn.Module]
    cloud_epochs: int
    description: str
    input_shape: tuple[int, ...] = ()
    local_epochs: int = 4  # a suitable ``epochs`` for ldpkit()'s local model on this task
    extra: dict = field(default_factory=dict)  # task-specific facts (e.g. the clipped fraction)

    @property
    def num_features(self) -> int:
        return int(self.x_private.shape[1])

    def __post_init__(self) -> None:
        for name in ("x_cloud_train", "x_private"):
            x = getattr(self, name)
            if x.dim() != 2 or x.dtype != torch.float32:
                raise ValueError(f"{self.name}: {name} must be a float32 (N, F) tensor")
            lo, hi = (
                float(np.float32(v)) for v in (self.lower, self.upper)
            )  # as the noise op sees them
            if x.numel() and (float(x.min()) < lo or float(x.max()) > hi):
                raise ValueError(
                    f"{self.name}: {name} leaves the domain [{self.lower}, {self.upper}]"
                )
        if not self.input_shape:
            self.input_shape = (self.num_features,)


class MissingTaskDataError(FileNotFoundError):
    """The data of a task is not installed; the message names what to install."""


def _stratified_halves(y: np.ndarray, cloud_fraction: float, seed: int):
    """Indices (cloud, private): per class, a seeded ``cloud_fraction`` goes to the cloud."""
    rng = np.random.default_rng(seed)
    cloud, private = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(cloud_fraction * len(idx))
        cloud.append(idx[:k])
        private.append(idx[k:])
    return np.sort(np.concatenate(cloud)), np.sort(np.concatenate(private))
