"""The untrusted cloud model, behind an interface that only takes noised data."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from noiseforge.ldp.models import predict_proba
from noiseforge.ldp.release import NoisedBatch


class CloudUnavailableError(ConnectionError):
    """The cloud could not be reached or gave no usable answer (retried by query_cloud)."""


class CloudTimeoutError(CloudUnavailableError, TimeoutError):
    """No complete answer arrived within the client's timeout (retried by query_cloud)."""


class CloudRequestError(ValueError):
    """The cloud refused the request itself (a 4xx answer): retrying will not help."""


class CloudModel(ABC):
    """A remote or local classifier that answers class probabilities.

    :meth:`predict` refuses anything but a :class:`NoisedBatch` and checks its
    seal just before the call: raw private data -- passed directly, written
    into released rows, or wrapped in a forged object -- cannot be sent by
    mistake. Subclasses implement :meth:`_predict`, which receives a private,
    verified copy of the released rows.
    """

    def predict(self, batch: NoisedBatch) -> torch.Tensor:
        """(M, C) float32 class probabilities for the rows of ``batch``.

        Raises TypeError for anything but a NoisedBatch and
        :class:`~noiseforge.ldp.seal.ReleaseIntegrityError` when its rows are
        not the rows noiseforge released.
        """
        if not isinstance(batch, NoisedBatch):
            raise TypeError(
                f"refusing to send {type(batch).__name__} to the cloud: only data released with "
                "noiseforge.ldp.release() (a NoisedBatch) may leave the client"
            )
        data, _ = batch._verified()
        probs = self._predict(data)
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
