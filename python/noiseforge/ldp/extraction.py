"""The model-extraction baseline LDPKiT is compared with.

An extraction attacker sends CLEAN inputs to the cloud and trains a copy on its
answers (knowledge distillation, Tramer et al. 2016; Orekondy et al. 2019). LDPKiT's
local model also learns from cloud answers, but only on LDP-noised queries; a
Zest distance to the cloud (:mod:`noiseforge.ldp.zest`) far above the extracted
model's shows the local model is not a copy.

The LDPKiT cloud client refuses un-noised data by design, so this baseline asks
the cloud's model directly: it takes the ``nn.Module`` (or an ``InProcessCloud``,
whose module it uses). It is an evaluation tool, not a client.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from noiseforge.ldp.models import predict_proba, train_classifier


def cloud_answers(cloud, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(N, C) float32 class probabilities of the cloud's model on clean ``x``."""
    module = getattr(cloud, "module", cloud)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"extraction queries the cloud's model on clean data: give an nn.Module or an "
            f"InProcessCloud, not {type(cloud).__name__}"
        )
    return predict_proba(module, x, batch_size)


def extract_model(
    cloud,
    x_queries: torch.Tensor,
    make_model: Callable[[], nn.Module],
    *,
    epochs: int = 4,
    seed: int = 0,
    targets: str = "soft",
    batch_size: int = 128,
    progress: bool = True,
) -> nn.Module:
    """A model trained on the cloud's answers to clean queries (the extraction baseline).

    ``x_queries``: (M, F) clean inputs (M = the query budget); ``targets``: ``"soft"``
    trains on the answered probabilities (as LDPKiT's ``targets="answers"``),
    ``"hard"`` on their argmax. ``make_model`` is called after
    ``torch.manual_seed(seed)``; training uses ``train_classifier`` with ``seed``.
    """
    if targets not in ("soft", "hard"):
        raise ValueError(f"targets must be 'soft' or 'hard', got {targets!r}")
    if x_queries.shape[0] == 0:
        raise ValueError("no queries: x_queries is empty")
    answers = cloud_answers(cloud, x_queries)
    y = answers if targets == "soft" else answers.argmax(1)
    torch.manual_seed(seed)
    model = make_model()
    train_classifier(
        model,
        x_queries.float(),
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc="extracted model",
    )
    return model.eval()
