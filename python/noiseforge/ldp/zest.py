"""Zest: an architecture-independent distance between two classifiers.

Jia, Chen, Chandrasekaran & Papernot, "A Zest of LIME: Towards Architecture-
Independent Model Distances" (ICLR 2022). A model's *signature* is the set of LIME
explanations it gives on shared reference inputs:

1. split every reference input's features into K segments (images: a grid of
   square patches, the paper uses quickshift superpixels; vectors: contiguous
   feature groups);
2. draw S binary masks z in {0, 1}^K per reference (z_0 = all ones, the rest
   uniform), make the perturbed input x(z) that keeps the segments with z_k = 1 and
   replaces the others by a fill value (the references' mean, as the paper fills
   with the data mean), and ask the model for class probabilities p(x(z)) (C,);
3. fit a ridge regression per reference, p ~ z W + b, and keep W (K, C);
4. signature = the W of all R references, (R, K, C).

The distance of two models is a distance between their signatures (cosine by
default; L1, L2, Linf), computed with the *same* references and masks for both.
Unlike the paper's code we do not re-align class columns (``lime_align``):
LDPKiT's models share one label space. The absolute value depends on the data
and the probe, so report it normalised by the distance of two models trained
independently (same architecture and data, different seeds):
:func:`normalized_zest_distance`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

METRICS = ("cosine", "l1", "l2", "linf")


@dataclass(frozen=True)
class ZestProbe:
    """The inputs every model of a comparison is asked about.

    ``references``: (R, F) float32 flattened reference inputs; ``input_shape``: the
    shape of one input as the models take it; ``segments``: (F,) int64 segment id of
    each feature in 0..K-1; ``masks``: (R, S, K) bool, True = segment kept
    (``masks[:, 0]`` all True); ``fill``: (F,) float32 value of a removed feature.
    """

    references: torch.Tensor
    input_shape: tuple[int, ...]
    segments: torch.Tensor
    masks: torch.Tensor
    fill: torch.Tensor

    @property
    def num_segments(self) -> int:
        return int(self.masks.shape[2])

    def perturbed(self, r: int) -> torch.Tensor:
        """(S, *input_shape) inputs of reference ``r``: kept segments from the
        reference, removed ones from ``fill``."""
        keep = self.masks[r][:, self.segments]  # (S, F)
        x = torch.where(keep, self.references[r], self.fill)
        return x.reshape(-1, *self.input_shape)


def grid_segments(height: int, width: int, patch: int, channels: int = 1) -> torch.Tensor:
    """(channels*height*width,) segment ids of square ``patch`` x ``patch`` cells
    (all channels of a cell in one segment), row-major; edge cells may be smaller."""
    if min(height, width, patch, channels) < 1:
        raise ValueError("height, width, patch and channels must be >= 1")
    rows = torch.arange(height) // patch
    cols = torch.arange(width) // patch
    ids = rows[:, None] * math.ceil(width / patch) + cols[None, :]
    return ids.expand(channels, height, width).reshape(-1).clone()


def feature_segments(num_features: int, groups: int) -> torch.Tensor:
    """(num_features,) ids of ``groups`` contiguous, near-equal feature groups."""
    if not 1 <= groups <= num_features:
        raise ValueError(f"groups must be in 1..{num_features}, got {groups}")
    return torch.arange(num_features) * groups // num_features


def _default_segments(input_shape: tuple[int, ...]) -> torch.Tensor:
    if len(input_shape) == 3 and min(input_shape[1:]) >= 4:
        c, h, w = input_shape
        return grid_segments(h, w, math.ceil(min(h, w) / 7), c)  # about 7x7 patches
    f = math.prod(input_shape)
    return feature_segments(f, min(32, f))


def make_probe(
    references: torch.Tensor,
    *,
    input_shape: Sequence[int] | None = None,
    segments: torch.Tensor | None = None,
    samples: int = 256,
    seed: int = 0,
    fill: float | torch.Tensor | None = None,
) -> ZestProbe:
    """The shared probe of a comparison: references, segments, seeded masks.

    ``references``: (R, *input_shape) or (R, F) with ``input_shape`` given.
    ``segments``: (F,) ids 0..K-1 (default: ~7x7 patches for (C, H, W) images,
    32 contiguous groups for vectors). ``samples``: S masks per reference.
    ``fill``: removed-feature value, scalar or (F,) (default: the references' mean
    per feature). The masks come from ``torch.Generator().manual_seed(seed)``.
    """
    if not isinstance(references, torch.Tensor) or references.dim() < 2:
        raise ValueError("references must be a tensor of shape (R, ...) with R >= 1 inputs")
    if references.shape[0] < 1:
        raise ValueError("references is empty: give at least one reference input")
    shape = tuple(input_shape) if input_shape is not None else tuple(references.shape[1:])
    refs = references.reshape(references.shape[0], -1).float()
    f = refs.shape[1]
    if math.prod(shape) != f:
        raise ValueError(f"input_shape {shape} has {math.prod(shape)} features, references {f}")
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (masks per reference), got {samples}")
    seg = _default_segments(shape) if segments is None else torch.as_tensor(segments).long()
    if seg.shape != (f,):
        raise ValueError(f"segments must be ({f},) segment ids, got shape {tuple(seg.shape)}")
    k = int(seg.max()) + 1
    if int(seg.min()) < 0 or torch.unique(seg).numel() != k:
        raise ValueError(f"segment ids must cover 0..{k - 1} without gaps")
    if fill is None:
        fill_t = refs.mean(0)
    else:
        fill_t = torch.as_tensor(fill, dtype=torch.float32).expand(f).clone()
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(refs.shape[0], samples, k, generator=gen) < 0.5
    masks[:, 0] = True  # the unperturbed reference, as in LIME
    return ZestProbe(refs, shape, seg, masks, fill_t)


def _as_logits_fn(model) -> Callable[[torch.Tensor], torch.Tensor]:
    module = getattr(model, "module", model)  # an InProcessCloud holds its module
    if isinstance(module, nn.Module):
        module.eval()
        return module
    if callable(module):
        return module
    raise TypeError(f"cannot query a {type(model).__name__}: give an nn.Module or a callable")


@torch.no_grad()
def zest_signature(
    model, probe: ZestProbe, *, alpha: float = 1.0, batch_size: int = 4096
) -> torch.Tensor:
    """(R, K, C) float64 signature: per reference r, the ridge coefficients W of
    ``softmax(model(x(z))) ~ z W + b`` over the probe's masks z (the intercept b
    is not penalised and not kept).

    ``model``: an ``nn.Module`` (or an InProcessCloud, or a callable) mapping
    (n, *input_shape) float32 inputs to (n, C) logits.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    fn = _as_logits_fn(model)
    r_count, s, k = probe.masks.shape
    out = []
    design = torch.cat([probe.masks.double(), torch.ones(r_count, s, 1, dtype=torch.float64)], 2)
    penalty = alpha * torch.eye(k + 1, dtype=torch.float64)
    penalty[k, k] = 0.0
    for r in range(r_count):
        x = probe.perturbed(r)
        logits = torch.cat([fn(x[i : i + batch_size]) for i in range(0, s, batch_size)])
        if logits.dim() != 2 or logits.shape[0] != s:
            raise RuntimeError(f"the model answered shape {tuple(logits.shape)} for {s} inputs")
        p = torch.softmax(logits.double(), dim=1)
        z = design[r]
        w = torch.linalg.solve(z.T @ z + penalty, z.T @ p)
        out.append(w[:k])
    return torch.stack(out)


def signature_distance(a: torch.Tensor, b: torch.Tensor, metric: str = "cosine") -> float:
    """Distance of two signatures of one probe, flattened to vectors u, v:
    cosine 1 - <u, v> / (|u| |v|), l1 |u - v|_1, l2 |u - v|_2, linf max |u - v|.
    Identical signatures are at distance 0 under every metric."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    if a.shape != b.shape:
        raise ValueError(
            f"signatures of shapes {tuple(a.shape)} and {tuple(b.shape)} do not compare: "
            "compute both with the same probe (and models with the same number of classes)"
        )
    u, v = a.double().reshape(-1), b.double().reshape(-1)
    if torch.equal(u, v):
        return 0.0
    if metric == "cosine":
        nu, nv = torch.linalg.vector_norm(u), torch.linalg.vector_norm(v)
        if nu == 0 or nv == 0:
            raise ValueError(
                "cosine distance of an all-zero signature is undefined (a constant model?)"
            )
        return float(1.0 - (u @ v) / (nu * nv))
    order = {"l1": 1, "l2": 2, "linf": math.inf}[metric]
    return float(torch.linalg.vector_norm(u - v, ord=order))


def _probe(references, probe_kwargs) -> ZestProbe:
    return (
        references if isinstance(references, ZestProbe) else make_probe(references, **probe_kwargs)
    )


def zest_distance(
    model_a,
    model_b,
    references: torch.Tensor | ZestProbe,
    *,
    metric: str = "cosine",
    seed: int = 0,
    samples: int = 256,
    alpha: float = 1.0,
    **probe_kwargs,
) -> float:
    """Zest distance of two models on shared references (a tensor, see
    :func:`make_probe`, or a ready :class:`ZestProbe`); same masks for both."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    probe = _probe(references, dict(probe_kwargs, seed=seed, samples=samples))
    sa = zest_signature(model_a, probe, alpha=alpha)
    sb = zest_signature(model_b, probe, alpha=alpha)
    return signature_distance(sa, sb, metric)


def zest_distances(
    models: Mapping[str, object],
    pairs: Sequence[tuple[str, str]],
    references: torch.Tensor | ZestProbe,
    *,
    metrics: Sequence[str] = METRICS,
    seed: int = 0,
    samples: int = 256,
    alpha: float = 1.0,
    **probe_kwargs,
) -> dict[tuple[str, str], dict[str, float]]:
    """Distances of several model pairs under several metrics, each model's
    signature computed once: ``{(a, b): {metric: distance}}``."""
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metrics {bad}; choose from {METRICS}")
    missing = sorted({n for p in pairs for n in p} - set(models))
    if missing:
        raise KeyError(f"pairs name models not given: {missing}")
    probe = _probe(references, dict(probe_kwargs, seed=seed, samples=samples))
    sigs = {n: zest_signature(models[n], probe, alpha=alpha) for n in {n for p in pairs for n in p}}
    return {(a, b): {m: signature_distance(sigs[a], sigs[b], m) for m in metrics} for a, b in pairs}


def normalized_zest_distance(
    model_a,
    model_b,
    reference_pair: tuple[object, object],
    references: torch.Tensor | ZestProbe,
    *,
    metric: str = "cosine",
    seed: int = 0,
    samples: int = 256,
    alpha: float = 1.0,
    **probe_kwargs,
) -> float:
    """d(a, b) / d(r1, r2): the Zest distance of ``model_a`` and ``model_b`` in units
    of the distance between ``reference_pair`` = two independently trained models
    (same architecture and data, different seeds). Below 1: closer than two
    independent trainings; about 1 or above: as different as unrelated models."""
    models = {"a": model_a, "b": model_b, "r1": reference_pair[0], "r2": reference_pair[1]}
    d = zest_distances(
        models,
        [("a", "b"), ("r1", "r2")],
        references,
        metrics=[metric],
        seed=seed,
        samples=samples,
        alpha=alpha,
        **probe_kwargs,
    )
    base = d[("r1", "r2")][metric]
    if base == 0:
        raise ValueError("the reference pair has distance 0: train the two with different seeds")
    return d[("a", "b")][metric] / base
