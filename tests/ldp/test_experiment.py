"""LDPKiT experiments: the sweep on a small generated task, the report files,
epsilon parsing, and the ``noiseforge ldp`` command's errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noiseforge.cli import main
from noiseforge.ldp import experiment as ex
from noiseforge.ldp.models import train_classifier
from tests.support.ldp_task import band_mlp, band_task


@pytest.fixture(scope="module")
def setup():
    x, y = band_task(3000, seed=0)
    cloud = band_mlp()
    train_classifier(cloud, x, y, epochs=5, batch_size=64, progress=False)
    px, py = band_task(1200, seed=5)
    return ex.Setup(
        name="bands",
        description="generated 16-pixel bands",
        cloud=cloud,
        x=px,
        y=py,
        lower=0.0,
        upper=1.0,
        make_model=band_mlp,
    )


def test_sweep_orders_points_and_ldpkit_wins_under_heavy_noise(setup):
    settings = ex.Settings(epochs=6)
    seen = []
    points = ex.sweep(
        setup, [0.5, math.inf], settings, seed=7, progress=False, on_point=seen.append
    )
    assert [p.epsilon for p in points] == [0.5, math.inf] and seen == points
    noisy, free = points
    assert noisy.epsilon_per_input == 0.5 * 16
    assert noisy.ldpkit > noisy.standard + 0.05, noisy
    assert noisy.queries == 1200 * 4  # released + 2 copies + 1200 mixtures
    # eps = inf: no noise; standard is the cloud on clean inputs, LDPKiT is extraction
    assert free.standard == free.clean
    assert free.ldpkit > 0.9 and free.queries == 2400
    assert all(0 <= p.clean <= 1 for p in points)


_REPEAT = """
import torch
from noiseforge.ldp import experiment as ex
from noiseforge.ldp.models import train_classifier
from tests.support.ldp_task import band_mlp, band_task
x, y = band_task(600, seed=0)
cloud = band_mlp()
train_classifier(cloud, x, y, epochs=2, batch_size=64, progress=False)
px, py = band_task(300, seed=5)
setup = ex.Setup("bands", "", cloud, px, py, 0.0, 1.0, band_mlp)
p = ex.run_point(setup, 1.0, ex.Settings(epochs=1), seed=3, progress=False)
print(p.standard, p.ldpkit)
"""


def test_seeded_runs_repeat_across_processes():
    """seed= gives the same noise, hence the same accuracies, in a new process (a
    seeded stream continues within one process, so the check needs two)."""
    root = Path(__file__).resolve().parents[2]
    runs = [
        subprocess.run(
            [sys.executable, "-c", _REPEAT], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and runs[0].strip()


def test_report_files(setup, tmp_path):
    points = [
        ex.Point(1.0, 16.0, 0.95, 0.5, 0.7, 100, 1.0),
        ex.Point(math.inf, math.inf, 0.95, 0.95, 0.93, 50, 1.0),
    ]
    keep = tmp_path / "mine.txt"
    keep.write_text("user file")
    paths = ex.write_report(points, tmp_path, setup=setup, settings=ex.Settings(), seed=None)
    md = paths["md"].read_text()
    assert "| 1 | 16 | 0.950 | 0.500 | 0.700 | +20.0 pts |" in md
    assert "| inf | inf |" in md and "secret" in md
    data = json.loads(paths["json"].read_text())
    assert data["task"] == "bands" and len(data["points"]) == 2
    assert paths["csv"].read_text().splitlines()[0].startswith("epsilon,epsilon_per_input,clean")
    assert keep.read_text() == "user file"  # only the report's own files are written
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parse_epsilons():
    assert ex.parse_epsilons("1, 2.5,inf") == [1.0, 2.5, math.inf]
    for bad in ("1,x", "0", "-1", "1,,2"):
        with pytest.raises(ValueError, match="epsilon"):
            ex.parse_epsilons(bad)


def test_run_point_rejects_bad_epsilon(setup):
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        ex.run_point(setup, 0.0, progress=False)


def test_cli_errors_are_clear(capsys):
    assert main(["ldp", "sweep", "--epsilons", "1,zero"]) == 2
    assert "cannot read epsilon 'zero'" in capsys.readouterr().err
    assert main(["ldp", "run", "--limit", "1"]) == 2
    assert "--limit must be at least 2" in capsys.readouterr().err


def test_cli_run_writes_the_report(tiny_fashion, monkeypatch, tmp_path, capsys):
    """`noiseforge ldp run` end to end on a tiny generated Fashion-MNIST-format set."""
    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tiny_fashion))
    monkeypatch.setenv("NOISEFORGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["ldp", "run", "--epochs", "1", "--seed", "2", "--quiet", "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        assert main([*args, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert "12 test images are private" in text and "eps    7 per pixel" in text
    data = json.loads((out / "results.json").read_text())
    assert data["points"][0]["epsilon_per_input"] == 7 * 784
    assert data["points"][0]["queries"] == 12 * 4


def test_cli_run_through_an_http_cloud(tiny_fashion, monkeypatch, tmp_path, capsys):
    """--cloud-url: the methods query `noiseforge cloud serve`; the clean reference
    (which would need un-noised images on the wire) is not measured, and eps = inf
    is refused."""
    import argparse

    from noiseforge.ldp.serve_command import build_cloud_server

    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tiny_fashion))
    monkeypatch.setenv("NOISEFORGE_CACHE", str(tmp_path / "cache"))
    server = build_cloud_server(argparse.Namespace(model="fashion-cnn", host="127.0.0.1", port=0))
    out = tmp_path / "remote"
    with server:
        args = ["ldp", "run", "--epochs", "1", "--quiet", "--cloud-url", server.url]
        assert main([*args, "--out", str(out)]) == 0
        text = capsys.readouterr().out
        assert "queries go to the cloud at http://" in text and "clean n/a" in text
        assert "| 7 | 5488 | n/a |" in (out / "results.md").read_text()
    # refused before any work: the default epsilons include inf
    assert main(["ldp", "sweep", "--cloud-url", "http://127.0.0.1:9"]) == 2
    assert "never sent to a remote cloud" in capsys.readouterr().err
    assert main(["ldp", "run", "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert main(["ldp", "run", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
