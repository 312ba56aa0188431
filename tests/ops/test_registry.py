"""Ops as objects: every op's plan type, example inputs and backend records; auto
selection, explicit backends and the reasons they cannot run; repeated runs give
identical bits on every backend (the determinism the numerical contract states)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from noiseforge import _native
from noiseforge.ops import registry
from tests.support.backends import BACKEND_DEVICES, assert_close_report, require_device

OPS = registry.all_ops()
OP_IDS = [op.name for op in OPS]


def _leaves(result):
    """The tensors of an op's result (a tensor, a tuple, or a dataclass of tensors)."""
    if isinstance(result, torch.Tensor):
        return [result]
    if dataclasses.is_dataclass(result):
        result = [getattr(result, f.name) for f in dataclasses.fields(result)]
    return [t for part in result for t in _leaves(part)]


def test_the_registry_knows_every_public_op():
    assert registry.ops() == sorted(
        ["aggregate_labels", "knn_topk", "ldp_noise", "philox_words", "vote_histogram"]
    )
    for op in OPS:
        assert registry.get_op(op.name) is op
        assert op.backends[-1] == "torch", "the torch reference is every op's last resort"
        assert op.summary


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_plan_and_example_inputs_are_the_public_plan_type(op):
    plan = op.example_inputs(torch.device("cpu"))
    assert isinstance(plan, op.plan_type)
    assert not op.plan_type.__name__.startswith("_")
    assert plan.device.type == "cpu"


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize(("backend", "device"), BACKEND_DEVICES)
def test_every_backend_is_deterministic_and_matches_the_reference(op, backend, device):
    require_device(device)
    if backend not in op.backends:
        pytest.skip(f"{op.name} has no {backend} backend")
    plan = op.example_inputs(torch.device(device))
    rec = op.record(backend)
    why = rec.reasons(plan)
    if why:
        pytest.skip("; ".join(why))
    # clones: an op may write into a buffer the plan holds (ldp_noise's out)
    first = [t.clone() for t in _leaves(rec.run(plan))]
    again = [t.clone() for t in _leaves(rec.run(plan))]
    want = [t.clone() for t in _leaves(op.record("torch").run(plan))]
    tolerance = rec.tolerance_for(device)
    for got, repeat, ref in zip(first, again, want, strict=True):
        assert_close_report(repeat, got, 0.0, 0.0)  # the same bits on a second run
        atol, rtol = tolerance.get(got.dtype, (0.0, 0.0))
        assert_close_report(got, ref, atol, rtol)


def test_triton_on_the_gpu_takes_the_gpu_tolerance():
    rec = registry.record("ldp_noise", "triton")
    assert rec.tolerance_for("cuda") == registry.record("ldp_noise", "cuda").tolerance_for("cuda")
    assert rec.tolerance_for("cpu") == registry.record("ldp_noise", "cpu").tolerance_for("cpu")
    assert rec.tolerance_for("cuda") != rec.tolerance_for("cpu")


def test_auto_prefers_native_cpu_for_cpu_tensors():
    assert _native.native() is not None, _native.native_error()
    for op in OPS:
        assert op.select("auto", op.example_inputs(torch.device("cpu"))).name == "cpu"


def test_auto_error_lists_every_backend(monkeypatch):
    # make every backend refuse: the error must name each one with its reason
    op = registry.get_op("ldp_noise")
    for rec in op.records():
        off = dataclasses.replace(rec, available=lambda: ["switched off for the test"])
        monkeypatch.setitem(op._records, rec.name, off)
    with pytest.raises(registry.BackendUnavailableError) as err:
        registry.select("ldp_noise", "auto", op.example_inputs(torch.device("cpu")))
    text = str(err.value)
    for name in ("torch", "cpu", "cuda", "triton"):
        assert name in text
    assert "switched off for the test" in text


def test_an_explicit_backend_that_cannot_run_says_why_and_what_can():
    op = registry.get_op("knn_topk")
    with pytest.raises(registry.BackendUnavailableError, match="has no 'cuda' backend"):
        op.run(op.example_inputs(torch.device("cpu")), "cuda")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    op = registry.get_op("philox_words")
    with pytest.raises(
        registry.BackendUnavailableError, match=r"Use backend='auto' or one of: .*cpu"
    ):
        op.run(op.example_inputs(torch.device("cpu")), "cuda")


def test_backend_names_are_checked():
    op = registry.get_op("philox_words")
    rec = op.record("torch")
    with pytest.raises(ValueError, match="unknown backend name 'numpy'"):
        op.add(dataclasses.replace(rec, name="numpy"))
    with pytest.raises(ValueError, match="record of op 'knn_topk'"):
        op.add(dataclasses.replace(rec, op="knn_topk"))
    with pytest.raises(ValueError, match="expected 'auto' or one of"):
        registry.requested_backend("gpu")
    with pytest.raises(KeyError, match="known ops"):
        registry.get_op("sort")


def test_env_var_chooses_the_backend(monkeypatch):
    monkeypatch.setenv(registry.BACKEND_ENV, "torch")
    op = registry.get_op("vote_histogram")
    assert op.select(None, op.example_inputs(torch.device("cpu"))).name == "torch"
    monkeypatch.setenv(registry.BACKEND_ENV, "fastest")
    with pytest.raises(ValueError, match=r"\$NOISEFORGE_BACKEND is 'fastest'"):
        op.select(None, op.example_inputs(torch.device("cpu")))


def test_select_checks_an_old_callers_device_type():
    op = registry.get_op("knn_topk")
    plan = op.example_inputs(torch.device("cpu"))
    assert registry.select("knn_topk", "auto", plan, "cpu").name == "cpu"
    with pytest.raises(ValueError, match="not the plan's"):
        registry.select("knn_topk", "auto", plan, "cuda")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    pytest.importorskip("triton", reason="the reason checked here is given once triton imports")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    op = registry.get_op("ldp_noise")
    why = op.why_not("triton", op.example_inputs(torch.device("cpu")))
    assert any("TRITON_INTERPRET=1" in w for w in why)


def test_cuda_reason_on_a_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    op = registry.get_op("ldp_noise")
    why = op.why_not("cuda", op.example_inputs(torch.device("cpu")))
    assert why and all(isinstance(w, str) and w for w in why)


def test_older_callers_still_work():
    plan_device = torch.device("cpu")
    assert registry.select("philox_words", "torch", plan_device, "cpu").name == "torch"
    op = registry.get_op("philox_words")
    rec = op.record("torch")
    with pytest.warns(DeprecationWarning, match="get_op"):
        assert registry.register(rec) is rec
    assert op.record("torch") is rec


def test_an_ldp_noise_plan_without_a_launch_is_refused():
    # a plan from plan() has no output and no counters: no backend may run it on a
    # default (public, repeated) stream
    op = registry.get_op("ldp_noise")
    plan = op.plan(torch.zeros(2, 3), epsilon=1.0, lower=0.0, upper=1.0)
    assert plan.seed is None and plan.offset is None and plan.out is None
    for rec in op.records():
        if not rec.reasons(plan):
            with pytest.raises(ValueError, match="run_plan"):
                rec.run(plan)
    launched = dataclasses.replace(plan, out=torch.empty(2, 1, 3))
    with pytest.raises(ValueError, match="no launch"):
        op.run(launched)
