"""The untrusted cloud model, behind an interface that only takes noised data."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from noiseforge.ldp.models import predict_proba
from noiseforge.ldp.release import NoisedBatch


class CloudModel(ABC):
    """A remote or local classifier that answers class probabilities.

    :meth:`predict` refuses anything but a :class:`NoisedBatch`: raw private
    data cannot be sent by mistake.
    """

    def predict(self, batch: NoisedBatch) -> torch.Tensor:
        """(M, C) float32 class probabilities for the rows of ``batch``."""
        if not isinstance(batch, NoisedBatch):
            raise TypeError(
                f"refusing to send {type(batch).__name__} to the cloud: only data released with "
                "noiseforge.ldp.release() (a NoisedBatch) may leave the client"
            )
        probs = self._predict(batch.data)
        if probs.dim() != 2 or probs.shape[0] != len(batch):
            raise RuntimeError(
                f"the cloud answered shape {tuple(probs.shape)} for {len(batch)} rows"
            )
        return probs

    @abstractmethod
    def _predict(self, data: torch.Tensor) -> torch.Tensor: ...


class InProcessCloud(CloudModel):
    """A PyTorch module run in this process (the cloud of experiments and tests).

    ``batch_size`` bounds the rows per forward pass; outputs are softmaxed logits.
    """

    def __init__(self, module: torch.nn.Module, batch_size: int = 1024) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.module = module.eval()
        self.batch_size = batch_size

    def _predict(self, data: torch.Tensor) -> torch.Tensor:
        return predict_proba(self.module, data, self.batch_size)
