"""The relevance engine end to end (``noiseforge relevance run``), one concern per module:

- :mod:`~noiseforge.relevance.pipeline.config`: :class:`RunConfig`, the per-task
  :class:`Strategies`, the system names (``SYSTEMS``, ``TUNED``) and :class:`RunResult`;
- :mod:`~noiseforge.relevance.pipeline.components`: the encoder, model and translator a
  config names, the labelled rows, the languages and the split by query;
- :mod:`~noiseforge.relevance.pipeline.ladder`: :func:`run` and the ablation ladder it
  climbs per task (``RUNGS``: baseline, +TA, +TA+SNS, +TA+SNS+SVF, +threshold; the
  protocol is in that module's docstring);
- :mod:`~noiseforge.relevance.pipeline.report`: the report folder (``report.md``, tables,
  predictions, training sets, the plot).

The private helpers of the old single module (``_uniform``, ``_markdown``, ...) are
re-exported under their own names too.
"""

from noiseforge.relevance.pipeline.components import _uniform as _uniform
from noiseforge.relevance.pipeline.components import (
    languages,
    load_rows,
    make_encoder,
    make_model_factory,
    make_translator,
    split,
)
from noiseforge.relevance.pipeline.config import (
    FIXTURE_NOISE,
    STEPS,
    SYSTEMS,
    TRANSLATORS,
    TUNED,
    RunConfig,
    RunResult,
    Strategies,
)
from noiseforge.relevance.pipeline.config import _default_strategies as _default_strategies
from noiseforge.relevance.pipeline.ladder import RUNGS, Climb, Rung, climb_ladder, run
from noiseforge.relevance.pipeline.report import _jsonable as _jsonable
from noiseforge.relevance.pipeline.report import _markdown as _markdown
from noiseforge.relevance.pipeline.report import _per_lang as _per_lang
from noiseforge.relevance.pipeline.report import _write_review as _write_review
from noiseforge.relevance.pipeline.report import plot_ablation, write_report

__all__ = [
    "FIXTURE_NOISE",
    "RUNGS",
    "STEPS",
    "SYSTEMS",
    "TRANSLATORS",
    "TUNED",
    "Climb",
    "RunConfig",
    "RunResult",
    "Rung",
    "Strategies",
    "climb_ladder",
    "languages",
    "load_rows",
    "make_encoder",
    "make_model_factory",
    "make_translator",
    "plot_ablation",
    "run",
    "split",
    "write_report",
]
