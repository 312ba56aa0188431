"""`noiseforge demo` end to end on generated data."""

from __future__ import annotations

import pytest

from noiseforge.cli import main


@pytest.mark.parametrize("mechanism", ["laplace", "discrete_laplace", "gaussian"])
def test_demo_runs_end_to_end(tiny_fashion, monkeypatch, capsys, mechanism):
    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tiny_fashion))
    args = ["--limit", "10", "--copies", "2", "--mechanism", mechanism, "--seed", "5"]
    assert main(["demo", "--parts", "noise", *args]) == 0
    out = capsys.readouterr().out
    assert "backends agree" in out and "bit-identical" in out
    assert "LDP per record" in out and "accuracy noisy" in out


def test_demo_ldpkit_part(tiny_fashion, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tiny_fashion))
    monkeypatch.setenv("NOISEFORGE_CACHE", str(tmp_path / "cache"))
    assert main(["demo", "--parts", "ldpkit", "--seed", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "LDPKiT vs standard eps-LDP" in out and "7 per pixel = 5488 per image" in out
    assert "LDPKiT - standard" in out and "done in" in out
    assert "fused LDP noise" not in out  # only the part asked for


def test_demo_reports_bad_arguments(tiny_fashion, monkeypatch, capsys):
    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tiny_fashion))
    assert main(["demo", "--parts", "noise,nope"]) == 2
    assert "unknown demo part(s) ['nope']" in capsys.readouterr().err
    assert main(["demo", "--parts", "ldpkit", "--mechanism", "gaussian"]) == 2
    assert "uses Laplace noise" in capsys.readouterr().err
    assert main(["demo", "--epsilon", "0"]) == 2
    assert "epsilon must be a finite number > 0" in capsys.readouterr().err
    for bad in ("0", "-3"):  # both were accepted once (0 then crashed in a reshape)
        assert main(["demo", "--parts", "noise", "--limit", bad]) == 2
        assert f"--limit must be >= 1, got {bad}" in capsys.readouterr().err
    assert main(["demo", "--parts", "noise", "--delta", "0", "--mechanism", "gaussian"]) == 2
    assert "--delta must be a finite number in (0, 1)" in capsys.readouterr().err
    assert main(["demo", "--parts", "noise,ldpkit", "--limit", "1"]) == 2
    assert "at least 2 for the ldpkit part" in capsys.readouterr().err
    # without the data set the parts that need it are skipped, and the demo fails (1)
    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tiny_fashion / "missing"))
    assert main(["demo", "--parts", "noise,ldpkit"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in err[:2]] == [
        "skipped the noise part",
        "skipped the ldpkit part",
    ]
    assert all("apt-get install dataset-fashion-mnist" in line for line in err[:2])
    assert "NOISEFORGE_FASHION_MNIST=" in err[0] and "Traceback" not in "".join(err)
    assert "--parts noise,ldpkit" in err[2] and len(err) == 3


def test_demo_runs_what_it_can_without_fashion_mnist(tmp_path, monkeypatch, capsys):
    """The relevance part needs no Fashion-MNIST: it runs (here a stand-in, the real one
    takes seconds) between the skipped parts, in order, and the demo then exits 1."""
    from noiseforge import demo

    monkeypatch.setenv("NOISEFORGE_FASHION_MNIST", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(demo, "_relevance_part", lambda args: calls.append(args.seed))
    assert main(["demo", "--seed", "3"]) == 1
    captured = capsys.readouterr()
    assert calls == [3]
    err = captured.err.splitlines()
    assert len(err) == 3 and "skipped the noise part" in err[0]
    assert "skipped the ldpkit part" in err[1]
    assert "ran relevance" in err[2] and "skipped noise, ldpkit" in err[2]
    assert "done in" not in captured.out
    # with the data set in place nothing is skipped and the demo succeeds
    monkeypatch.setattr(demo, "_noise_part", lambda args: calls.append("noise"))
    monkeypatch.setattr(demo, "_ldpkit_part", lambda args: calls.append("ldpkit"))
    monkeypatch.setattr(demo, "fashion_mnist_missing", lambda: None)
    assert main(["demo"]) == 0
    assert calls[1:] == ["noise", "ldpkit", None] and "done in" in capsys.readouterr().out
