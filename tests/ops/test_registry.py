"""The backend registry: auto selection, explicit backends and the reasons they cannot run."""

from __future__ import annotations

import pytest
import torch

from noiseforge import _native
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
