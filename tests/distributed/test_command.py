"""``noiseforge ldp run --engine ray``: the local engine's report, from a Ray job."""

from __future__ import annotations

import json

import pytest

import noiseforge.random
from noiseforge.cli import main


@pytest.mark.parametrize("command", ["run"])
def test_engine_ray_reports_what_engine_local_reports(
    ray_cluster, tiny_fashion, monkeypatch, tmp_path, capsys, command
):
    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tiny_fashion))
    monkeypatch.setenv("NOISEFORGE_CACHE", str(tmp_path / "cache"))
    points = {}
    for engine in ("local", "ray"):
        # each run starts the seeded streams afresh, as its own process would
        monkeypatch.setattr(noiseforge.random, "_seeded", {})
        out = tmp_path / engine
        args = ["ldp", command, "--epochs", "1", "--seed", "2", "--quiet", "--out", str(out)]
        assert main([*args, "--engine", engine]) == 0
        points[engine] = json.loads((out / "results.json").read_text())["points"]
    capsys.readouterr()
    for p in (*points["local"], *points["ray"]):
        p.pop("seconds")
    assert points["ray"] == points["local"]
    assert points["ray"][0]["queries"] == 12 * 4


def test_the_engine_is_chosen_by_the_command_line_only(monkeypatch):
    import argparse

    from noiseforge._common.argtypes import UsageError
    from noiseforge.ldp import command

    args = argparse.Namespace(ldp_command="run", engine="ray")
    with pytest.raises(UsageError, match="set up by the noiseforge command line"):
        command.run(args)
    assert main(["ldp", "run", "--engine", "spark"]) == 2
    assert main(["ldp", "run", "--ray-address", "127.0.0.1:9"]) == 2  # without --engine ray
