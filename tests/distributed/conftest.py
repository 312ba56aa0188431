"""One Ray instance for the whole session: ``$RAY_ADDRESS`` when it is set, else a local
instance of 2 CPUs started here and shut down at the end."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip(
        "ray", reason="the ray engine's tests need pip install 'noiseforge[ray]'"
    )
    pytest.importorskip("ray.data")
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()
