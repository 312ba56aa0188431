"""Backend registry, `noiseforge info`, the demo and the Fashion-MNIST loader."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from noiseforge import _native
from noiseforge.cli import main
from noiseforge.data import DatasetNotFoundError, load_fashion_mnist
from noiseforge.ops import registry
from noiseforge.ops.ldp_noise import plan_ldp_noise


def _probe(device="cpu"):
    return plan_ldp_noise(torch.zeros(2, 3, device=device), epsilon=1.0, lower=0.0, upper=1.0)


def test_every_op_has_all_four_backends():
    for op in ("ldp_noise", "philox_words"):
        assert {r.name for r in registry.records(op)} == {"torch", "cpu", "cuda", "triton"}


def test_auto_prefers_native_cpu_for_cpu_tensors():
    assert _native.native() is not None, _native.native_error()
    assert registry.select("ldp_noise", "auto", _probe(), "cpu").name == "cpu"


def test_auto_error_lists_every_backend(monkeypatch):
    # make every backend refuse: the error must name each one with its reason
    for rec in registry.records("ldp_noise"):
        monkeypatch.setitem(
            registry._REGISTRY["ldp_noise"],
            rec.name,
            registry.BackendRecord(
                rec.op,
                rec.name,
                rec.priority,
                rec.auto_devices,
                lambda: ["switched off for the test"],
                rec.supports,
                rec.run,
            ),
        )
    with pytest.raises(registry.BackendUnavailableError) as err:
        registry.select("ldp_noise", "auto", _probe(), "cpu")
    text = str(err.value)
    for name in ("torch", "cpu", "cuda", "triton"):
        assert name in text
    assert "switched off for the test" in text


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    why = registry.why_not("ldp_noise", "triton", _probe())
    assert any("TRITON_INTERPRET=1" in w for w in why)


def test_cuda_reason_on_a_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    why = registry.why_not("ldp_noise", "cuda", _probe())
    assert why and all(isinstance(w, str) and w for w in why)


def test_info_prints_build_and_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "native module: built with" in out and "OpenMP" in out and "CUDA:" in out
    assert "triton:" in out
    assert "ldp_noise" in out and "philox_words" in out and "usable (auto)" in out


def test_console_script_runs_as_module():
    done = subprocess.run(
        [sys.executable, "-m", "noiseforge", "info"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "backend" in done.stdout


def _write_idx(path, magic, array):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_loader_reads_idx_files(tiny_fashion):
    x, y = load_fashion_mnist("test", root=tiny_fashion)
    assert x.shape == (12, 28, 28) and x.dtype == np.uint8 and x.flags.writeable
    assert y.tolist() == [i % 10 for i in range(12)]
    x, y = load_fashion_mnist("train", root=tiny_fashion, limit=5)
    assert len(x) == len(y) == 5


def test_loader_errors(tiny_fashion, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("valid", root=tiny_fashion)
    bad = tiny_fashion / "t10k-images-idx3-ubyte.gz"
    data = gzip.open(bad).read()
    with gzip.open(bad, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist("test", root=tiny_fashion)


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
