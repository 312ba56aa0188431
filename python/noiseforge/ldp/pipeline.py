"""LDPKiT end to end (Li, Xi, Mehta & Lie, arXiv 2405.16361), and the standard
eps-LDP baseline it is compared with.

LDPKiT: release each private input once (layer 1, charged), expand the released
rows for free (layer 2: more noise copies, superimposed pairs), ask the cloud
for class probabilities, aggregate them per private input (soft labels over the
input's copies), train a local model on the noisy query set, then classify the
private inputs locally -- they never leave the client un-noised.
Standard eps-LDP: release each input once and take the cloud's answer as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from noiseforge.ldp.cloud import CloudModel
from noiseforge.ldp.expand import add_noise_copies, concat, superimpose
from noiseforge.ldp.ledger import PrivacyLedger
from noiseforge.ldp.models import predict_labels, train_classifier
from noiseforge.ldp.query import query_cloud
from noiseforge.ldp.release import NoisedBatch, release
from noiseforge.ops import soft_label_sum

# Layer-1 noise as one value; it lives with the op that accepts it (this module's name
# for it is kept for the code that imports it from here).
from noiseforge.ops.noise_spec import NoiseSpec

__all__ = ["LDPKiTResult", "NoiseSpec", "ldpkit", "standard_ldp"]


@dataclass
class LDPKiTResult:
    predictions: torch.Tensor  # (N,) local model's labels for the private inputs
    aggregated: torch.Tensor  # (N, C) mean cloud probabilities over each input's copies
    local_model: torch.nn.Module
    queries: int  # rows sent to the cloud
    released: NoisedBatch


def standard_ldp(
    x: torch.Tensor,
    records,
    cloud: CloudModel,
    ledger: PrivacyLedger,
    noise: NoiseSpec,
    *,
    seed: int | None = None,
    batch_size: int = 1024,
    progress: bool = True,
    release_id: str | None = None,
) -> torch.Tensor:
    """The baseline: one noised release per input, the cloud's top answer as the label.

    ``noise`` is the release's :class:`NoiseSpec`; ``release_id`` names the release in
    the ledger (default: a new id)."""
    released = release(x, records, ledger, noise, seed=seed, release_id=release_id)
    return query_cloud(cloud, released, batch_size=batch_size, progress=progress).argmax(1)


def ldpkit(
    x: torch.Tensor,
    records,
    cloud: CloudModel,
    ledger: PrivacyLedger,
    noise: NoiseSpec,
    make_local_model: Callable[[], torch.nn.Module],
    *,
    noise_copies: int = 2,
    superimposed: float = 1.0,
    weight: float = 0.5,
    targets: str = "answers",
    epochs: int = 4,
    batch_size: int = 128,
    schedule: str = "constant",
    seed: int | None = None,
    checkpoint=None,
    progress: bool = True,
    release_id: str | None = None,
) -> LDPKiTResult:
    """Private inference through the cloud by knowledge transfer to a local model.

    ``noise``: the :class:`NoiseSpec` of the release (layer 1) and of the extra
    noise copies (layer 2, free);
    ``noise_copies``: extra noisy copies of each released row;
    ``superimposed``: superimposed pairs as a fraction of N; ``targets``:
    ``"answers"`` trains on each query's own cloud probabilities,
    ``"aggregated"`` gives an input's rows the mean answer over its copies.
    The ledger is charged once per input (layer 1) and never again, under
    ``release_id`` (default: a new id); ``checkpoint`` keeps the cloud's answers
    (see :func:`query_cloud`).
    """
    if targets not in ("answers", "aggregated"):
        raise ValueError(f"targets must be 'answers' or 'aggregated', got {targets!r}")
    if noise_copies < 0 or superimposed < 0:
        raise ValueError("noise_copies and superimposed must be >= 0")
    released = release(x, records, ledger, noise, seed=seed, release_id=release_id)
    parts = [released]
    s = None if seed is None else seed + 1
    if noise_copies:
        parts.append(add_noise_copies(released, noise_copies, noise, seed=s))
    pairs = round(superimposed * len(released))
    if pairs:
        parts.append(superimpose(released, pairs, weight=weight, seed=s))
    queries = concat(*parts)
    answers = query_cloud(cloud, queries, batch_size=1024, checkpoint=checkpoint, progress=progress)
    # per private input: mean answer over its released row and noise copies
    n = len(released)
    position = {int(r): i for i, r in enumerate(released.records.tolist())}
    own = queries.records >= 0
    index = torch.tensor(
        [position[int(r)] for r in queries.records[own].tolist()], dtype=torch.int64
    )
    aggregated = soft_label_sum(index, answers[own], n, mean=True)
    train_targets = answers.clone()
    if targets == "aggregated":
        train_targets[own] = aggregated[index]
    local = make_local_model()
    train_classifier(
        local,
        queries.data,
        train_targets,
        epochs=epochs,
        batch_size=batch_size,
        schedule=schedule,
        seed=0 if seed is None else seed,
        progress=progress,
        desc="local model",
    )
    return LDPKiTResult(predict_labels(local, x), aggregated, local, len(queries), released)
