"""Benchmarks run with pytest-benchmark: ``pytest benchmarks --benchmark-enable``.

Each suite measures the noiseforge op and its peer (the obvious PyTorch code) in
the same run; ``benchmarks/report.py`` turns the JSON into ratios.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "0")
