"""The Ray runtime: one clear line for a missing cluster, threads from the task's CPUs."""

from __future__ import annotations

import gc
import time

import pytest
import torch

from noiseforge.distributed import runtime
from tests.support.faults import run_against_no_ray_cluster


def test_a_bad_address_fails_with_one_line_saying_how_to_start_a_cluster(tmp_path):
    """Nothing listens on port 9: the command stops within seconds (Ray alone would wait
    a minute or more) with one line naming `ray start --head` and `--engine local`."""
    t0 = time.monotonic()
    run_against_no_ray_cluster(["ldp", "run", "--quiet", "--out", str(tmp_path / "out")])
    assert time.monotonic() - t0 < 60


def test_unreadable_addresses_are_refused_before_connecting():
    with pytest.raises(runtime.RayUnavailableError, match="cannot read the Ray address"):
        runtime._head("not an address")
    assert runtime._head("auto") is None
    assert runtime._head("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert runtime._head("ray://head:10001") == ("head", 10001)


def test_configure_threads_follows_the_cpus_it_is_given():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert runtime.configure_threads(1.0) == 1 and torch.get_num_threads() == 1
        assert runtime.configure_threads(0.5) == 1  # a fractional share still gets a thread
        assert runtime.configure_threads(2.0) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_reused_worker_takes_each_tasks_own_thread_count(ray_cluster):
    ray = ray_cluster

    @ray.remote
    def threads_of_task():
        import os

        runtime.configure_threads()
        return os.getpid(), torch.get_num_threads()

    # the actors of earlier jobs give their CPUs back once collected
    for _ in range(60):
        gc.collect()
        if ray.available_resources().get("CPU", 0) >= 2:
            break
        time.sleep(1)
    seen = []
    for cpus in (2, 1, 2, 0.5, 2):
        task = threads_of_task.options(num_cpus=cpus).remote()
        seen.append((cpus, *ray.get(task, timeout=120)))
    for cpus, _, threads in seen:
        assert threads == max(1, int(cpus)), seen
