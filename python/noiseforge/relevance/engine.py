"""What the relevance batch steps run on: this process, or another engine.

A :class:`RelevanceEngine` names the three data steps -- translation augmentation,
semantic-negative mining and self-validation filtering -- as callables with the
local functions' keyword arguments and results (the data and the first arguments
positional, as the local functions take them). :data:`LOCAL` is this process;
``noiseforge.distributed.engine.relevance_engine()`` builds the Ray one (this
package never imports ``noiseforge.distributed``: the command line composes them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from noiseforge.relevance.augment import augment_translations
from noiseforge.relevance.filtering import self_validation_filter
from noiseforge.relevance.mining import add_semantic_negatives

__all__ = ["LOCAL", "RelevanceEngine", "as_engine"]


@dataclass(frozen=True)
class RelevanceEngine:
    """The relevance data steps of one engine.

    ``augment``: as :func:`~noiseforge.relevance.augment.augment_translations`;
    ``mine``: as :func:`~noiseforge.relevance.mining.add_semantic_negatives`;
    ``filter``: as :func:`~noiseforge.relevance.filtering.self_validation_filter`
    (the same keyword arguments, the same results).
    """

    name: str = "local"
    augment: Callable[..., Any] = augment_translations
    mine: Callable[..., Any] = add_semantic_negatives
    filter: Callable[..., Any] = self_validation_filter


#: this process
LOCAL = RelevanceEngine()


def as_engine(engine: RelevanceEngine | Callable[..., Any] | None) -> RelevanceEngine:
    """``engine`` as a RelevanceEngine: None is :data:`LOCAL`; a bare callable is a
    filter (what ``relevance filter``'s ``engine=`` took before the other steps had
    engines), with the local augment and mine."""
    if engine is None:
        return LOCAL
    if isinstance(engine, RelevanceEngine):
        return engine
    if callable(engine):
        return RelevanceEngine(name="custom", filter=engine)
    raise TypeError(
        f"engine must be a noiseforge.relevance.engine.RelevanceEngine, got {type(engine).__name__}"
    )
