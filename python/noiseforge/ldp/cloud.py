"""The untrusted cloud model, behind an interface that only takes noised data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from noiseforge.ldp.models import predict_proba
from noiseforge.ldp.release import NoisedBatch

SUM_TOLERANCE = 1e-3  # |row sum - 1| allowed (float32 softmax outputs are within ~1e-6)


class CloudQueryError(RuntimeError):
    """The cloud kept failing; the answers finished so far are in the checkpoint."""


class CloudAnswerError(CloudQueryError):
    """An answer of the cloud is not a valid table of class probabilities."""


def check_answers(answer: Any, rows: int, classes: int | None = None) -> torch.Tensor:
    """``answer`` as a (rows, C) float32 CPU tensor, or CloudAnswerError saying what is wrong.

    Valid: a 2-D floating tensor with ``rows`` rows and ``classes`` columns (if
    given, else >= 1), every value finite and >= 0, every row summing to 1
    within ``SUM_TOLERANCE``.
    """
    if not isinstance(answer, torch.Tensor):
        raise CloudAnswerError(f"the cloud answered a {type(answer).__name__}, not a tensor")
    if answer.dim() != 2 or answer.shape[0] != rows:
        raise CloudAnswerError(
            f"the cloud answered shape {tuple(answer.shape)} for {rows} rows (expected "
            f"({rows}, classes))"
        )
    if classes is not None and answer.shape[1] != classes:
        raise CloudAnswerError(
            f"the cloud answered {answer.shape[1]} classes, earlier answers had {classes}"
        )
    if answer.shape[1] < 1:
        raise CloudAnswerError("the cloud answered 0 classes")
    if not answer.is_floating_point():
        raise CloudAnswerError(f"the cloud answered dtype {answer.dtype}, not probabilities")
    a = answer.detach().to("cpu", torch.float32).contiguous()
    if rows == 0:
        return a
    finite = torch.isfinite(a)
    if not bool(finite.all()):
        r, c = (int(v) for v in torch.nonzero(~finite)[0])
        raise CloudAnswerError(f"the cloud answered {float(a[r, c])} for row {r}, class {c}")
    if bool((a < 0).any()):
        r, c = (int(v) for v in torch.nonzero(a < 0)[0])
        raise CloudAnswerError(
            f"the cloud answered a negative probability {float(a[r, c])} (row {r}, class {c})"
        )
    sums = a.double().sum(1)
    off = (sums - 1).abs() > SUM_TOLERANCE
    if bool(off.any()):
        r = int(torch.nonzero(off)[0])
        raise CloudAnswerError(
            f"the cloud's probabilities for row {r} sum to {float(sums[r]):.6g}, not 1"
        )
    return a


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
        """(M, C) float32 class probabilities for the rows of ``batch``, checked.

        Raises TypeError for anything but a NoisedBatch,
        :class:`~noiseforge.ldp.seal.ReleaseIntegrityError` when its rows are
        not the rows noiseforge released, and CloudAnswerError when the answer
        is not a table of probabilities (see :func:`check_answers`).
        """
        return CloudModel._answer(self, batch)

    def _answer(self, batch: NoisedBatch, classes: int | None = None) -> torch.Tensor:
        """What :meth:`predict` does, with the answer's class count checked against
        ``classes`` too; :func:`query_cloud` calls this base implementation, whatever
        a subclass overrides."""
        if not isinstance(batch, NoisedBatch):
            raise TypeError(
                f"refusing to send {type(batch).__name__} to the cloud: only data released with "
                "noiseforge.ldp.release() (a NoisedBatch) may leave the client"
            )
        data, _ = batch._verified()
        return check_answers(self._predict(data), len(batch), classes)

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
