"""Noise parameters as values: the mechanism types check their parameters with the op's
messages and calibrate as the op does, a NoiseSpec is immutable and hashable, and the
op draws bit-identical noise from a spec and from the keyword form."""

from __future__ import annotations

import ast
import copy
import dataclasses
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from noiseforge.ops import (
    DiscreteLaplace,
    Gaussian,
    Laplace,
    Mechanism,
    NoiseSpec,
    calibrate_noise,
    ldp_noise,
    ldp_noise_calibration,
)
from noiseforge.ops.calibration import analytic_gaussian_sigma, geometric_alpha
from noiseforge.ops.ldp_noise import plan_ldp_noise
from noiseforge.ops.noise_spec import mechanism_from_name

ROOT = Path(__file__).resolve().parents[2]

# (keyword form, the same noise as a spec): every mechanism, per-feature bounds, both units
CASES = [
    pytest.param(
        dict(epsilon=1.5, lower=-1.0, upper=2.0),
        NoiseSpec(Laplace(1.5), lower=-1.0, upper=2.0),
        id="laplace",
    ),
    pytest.param(
        dict(epsilon=0.7, lower=np.linspace(-1, 0, 5), upper=2.0, unit="record", clamp=False),
        NoiseSpec(Laplace(0.7), np.linspace(-1, 0, 5), 2.0, unit="record", clamp=False),
        id="laplace-record-unclamped",
    ),
    pytest.param(
        dict(epsilon=1.0, lower=-1.0, upper=2.0, mechanism="gaussian", delta=1e-5),
        NoiseSpec(Gaussian(1.0, 1e-5), lower=-1.0, upper=2.0),
        id="gaussian",
    ),
    pytest.param(
        dict(epsilon=2.0, lower=-1.0, upper=2.0, mechanism="gaussian", delta=1e-6, unit="record"),
        NoiseSpec(Gaussian(2.0, delta=1e-6), lower=-1.0, upper=2.0, unit="record"),
        id="gaussian-record",
    ),
    pytest.param(
        dict(epsilon=3.0, lower=-1.0, upper=2.0, mechanism="discrete_laplace"),
        NoiseSpec(DiscreteLaplace(3.0), lower=-1.0, upper=2.0),
        id="discrete",
    ),
    pytest.param(
        dict(epsilon=3.0, lower=0.0, upper=1.0, mechanism="discrete_laplace", levels=16),
        NoiseSpec(mechanism=DiscreteLaplace(3.0, levels=16), lower=0.0, upper=1.0),
        id="discrete-levels",
    ),
]


@pytest.mark.parametrize(("kwargs", "spec"), CASES)
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_a_spec_and_the_keyword_form_draw_bit_identical_noise(kwargs, spec, backend):
    x = torch.rand(7, 5, generator=torch.Generator().manual_seed(3)) * 4 - 1.5
    by_keywords = ldp_noise(x, copies=2, seed=21, offset=4, backend=backend, **kwargs)
    by_spec = ldp_noise(x, spec, copies=2, seed=21, offset=4, backend=backend)
    by_name = ldp_noise(x, noise=spec, copies=2, seed=21, offset=4, backend=backend)
    assert torch.equal(by_keywords, by_spec) and torch.equal(by_spec, by_name)
    assert by_keywords.dtype == by_spec.dtype
    # the same calibration (the guarantee) and the same plan for the backends
    a = ldp_noise_calibration(x, copies=2, **kwargs)
    b = ldp_noise_calibration(x, spec, copies=2)
    assert (a.mechanism, a.unit, a.epsilon, a.delta, a.levels, a.alpha) == (
        b.mechanism,
        b.unit,
        b.epsilon,
        b.delta,
        b.levels,
        b.alpha,
    )
    assert (a.epsilon_total, a.delta_total) == (b.epsilon_total, b.delta_total)
    np.testing.assert_array_equal(a.scale, b.scale)
    plan = plan_ldp_noise(x, spec)
    assert plan.noise == spec and plan.mechanism == spec.mechanism.name
    assert plan_ldp_noise(x, **kwargs).noise == spec


def test_uint8_discrete_laplace_takes_its_levels_from_the_domain_either_way():
    x = torch.randint(0, 256, (4, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    spec = NoiseSpec(DiscreteLaplace(4.0), lower=0, upper=255)
    want = ldp_noise(
        x, epsilon=4.0, lower=0, upper=255, mechanism="discrete_laplace", seed=2, offset=0
    )
    got = ldp_noise(x, spec, seed=2, offset=0)
    assert got.dtype == torch.uint8 and torch.equal(got, want)
    assert ldp_noise_calibration(x, spec).levels == 256
    assert spec.levels is None  # the spec itself is unchanged: the grid is the call's


# ------------------------------------------------------------------ the mechanism types


def test_mechanisms_have_their_names_parameters_and_formulas():
    lap, gau, dis = Laplace(2.0), Gaussian(1.0, 1e-5), DiscreteLaplace(3.0, levels=16)
    assert [m.name for m in (lap, gau, dis)] == ["laplace", "gaussian", "discrete_laplace"]
    assert all(isinstance(m, Mechanism) for m in (lap, gau, dis))
    assert (lap.delta, lap.levels, gau.levels, dis.delta) == (None, None, None, None)
    assert (gau.delta, dis.levels) == (1e-5, 16)
    assert lap.scale(3.0) == 1.5
    assert gau.sigma(2.0) == analytic_gaussian_sigma(1.0, 1e-5, 2.0)
    assert dis.alpha(15) == geometric_alpha(3.0, 15)
    assert isinstance(Laplace(np.float32(2.0)).epsilon, float)
    assert DiscreteLaplace(1.0, levels=np.int64(8)).levels == 8


@pytest.mark.parametrize(
    ("mechanism", "kwargs"),
    [
        (Laplace(1.5), dict(unit="feature")),
        (Gaussian(1.0, 1e-5), dict(unit="record", copies=3)),
        (DiscreteLaplace(2.0, 32), dict(unit="feature", copies=2)),
    ],
)
def test_a_mechanism_calibrates_as_calibrate_noise(mechanism, kwargs):
    lower, upper = np.zeros(4, np.float32), np.array([1, 2, 3, 4], np.float32)
    got = mechanism.calibrate(lower, upper, **kwargs)
    want = calibrate_noise(
        mechanism=mechanism.name,
        epsilon=mechanism.epsilon,
        delta=mechanism.delta,
        lower=lower,
        upper=upper,
        levels=mechanism.levels,
        **kwargs,
    )
    np.testing.assert_array_equal(got.scale, want.scale)
    assert (got.epsilon_total, got.delta_total, got.guarantee) == (
        want.epsilon_total,
        want.delta_total,
        want.guarantee,
    )


@pytest.mark.parametrize(
    ("build", "err", "match"),
    [
        (lambda: Laplace(0.0), ValueError, "epsilon must be a finite number > 0, got 0.0"),
        (lambda: Laplace(float("inf")), ValueError, "epsilon must be a finite number > 0"),
        (lambda: Laplace("1"), TypeError, "epsilon must be a real number, got str"),
        (lambda: Laplace(True), TypeError, "epsilon must be a real number, got bool"),
        (lambda: Laplace(10**400), ValueError, "an integer of 1329 bits"),
        (lambda: Gaussian(1.0), ValueError, r"needs delta in \(0, 1\), e\.g\. delta=1e-5"),
        (lambda: Gaussian(1.0, 1.0), ValueError, r"delta must be in \(0, 1\), got 1.0"),
        (lambda: Gaussian(1.0, -0.1), ValueError, "delta must be a finite number > 0"),
        (lambda: Gaussian(-1.0, 1e-5), ValueError, "epsilon must be a finite number > 0"),
        (lambda: DiscreteLaplace(1.0, 1), ValueError, r"levels must be an int in \[2, 4097\]"),
        (lambda: DiscreteLaplace(1.0, 5000), ValueError, "levels must be an int in"),
        (lambda: DiscreteLaplace(1.0, 2.5), ValueError, "got 2.5"),
        (lambda: DiscreteLaplace(1.0, True), ValueError, "got True"),
        (lambda: mechanism_from_name("exponential", 1.0), ValueError, "mechanism must be one of"),
        (lambda: mechanism_from_name(["laplace"], 1.0), ValueError, "mechanism must be one of"),
        (
            lambda: mechanism_from_name("laplace", 1.0, delta=1e-5),
            ValueError,
            "delta applies to mechanism='gaussian' only; laplace is pure eps-LDP",
        ),
        (
            lambda: mechanism_from_name("gaussian", 1.0, 1e-5, levels=8),
            ValueError,
            "levels applies to mechanism='discrete_laplace' only",
        ),
    ],
)
def test_mechanisms_refuse_bad_parameters_with_the_ops_messages(build, err, match):
    with pytest.raises(err, match=match):
        build()


def test_mechanism_values_are_frozen_and_hashable():
    m = Gaussian(1.0, 1e-5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.epsilon = 100.0  # type: ignore[misc]
    assert Gaussian(1.0, 1e-5) == m and len({m, Gaussian(1.0, 1e-5), Laplace(1.0)}) == 2
    assert Laplace(1.0) != DiscreteLaplace(1.0)
    assert mechanism_from_name("laplace", 1.0, delta=0) == Laplace(1.0)  # 0: no delta


# ------------------------------------------------------------------ the spec as a value


def test_the_old_constructor_forms_still_build_the_spec():
    assert NoiseSpec(0.5) == NoiseSpec(Laplace(0.5), 0.0, 1.0)  # defaults: [0, 1]
    spec = NoiseSpec(2.0, -1.0, 1.0, "gaussian", 1e-5, "record")
    assert spec == NoiseSpec(Gaussian(2.0, 1e-5), -1.0, 1.0, unit="record")
    assert (spec.epsilon, spec.delta, spec.levels) == (2.0, 1e-5, None)
    assert (spec.mechanism.name, spec.lower, spec.upper, spec.unit, spec.clamp) == (
        "gaussian",
        -1.0,
        1.0,
        "record",
        True,
    )
    spec = NoiseSpec(epsilon=1.0, mechanism="discrete_laplace", levels=16)
    assert spec.mechanism == DiscreteLaplace(1.0, 16) and spec.levels == 16
    assert NoiseSpec(mechanism=Laplace(3.0), unit="record").unit == "record"
    assert dataclasses.replace(spec, upper=2.0) == NoiseSpec(DiscreteLaplace(1.0, 16), 0.0, 2.0)


def test_kwargs_is_deprecated_but_gives_the_same_noise():
    x = torch.rand(3, 4)
    spec = NoiseSpec(1.0, 0.0, 1.0, "gaussian", 1e-5)
    with pytest.warns(DeprecationWarning, match="pass the spec itself"):
        kw = spec.kwargs()
    assert kw == dict(
        epsilon=1.0, lower=0.0, upper=1.0, mechanism="gaussian", delta=1e-5, unit="feature"
    )
    assert torch.equal(ldp_noise(x, seed=1, offset=0, **kw), ldp_noise(x, spec, seed=1, offset=0))
    with pytest.warns(DeprecationWarning):
        kw = NoiseSpec(DiscreteLaplace(2.0, 8), clamp=True).kwargs()
    assert kw["levels"] == 8 and "clamp" not in kw
    with pytest.warns(DeprecationWarning):
        assert NoiseSpec(1.0, clamp=False).kwargs()["clamp"] is False


def test_a_spec_is_immutable_hashable_and_compares_by_value():
    spec = NoiseSpec(Laplace(1.0), lower=np.zeros(3), upper=np.array([1.0, 2.0, 3.0]))
    same = NoiseSpec(Laplace(1.0), lower=[0.0, 0.0, 0.0], upper=np.array([1.0, 2.0, 3.0]))
    assert spec == same and hash(spec) == hash(same)
    assert len({spec, same, NoiseSpec(Laplace(1.0))}) == 2
    assert {spec: "ok"}[same] == "ok"
    assert spec != NoiseSpec(Laplace(1.0), lower=np.zeros(3), upper=np.array([1.0, 2.0, 4.0]))
    assert spec != NoiseSpec(Laplace(2.0), lower=np.zeros(3), upper=np.array([1.0, 2.0, 3.0]))
    for field, value in (("mechanism", Laplace(9.0)), ("lower", 0.5), ("unit", "record")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(spec, field, value)
    with pytest.raises(AttributeError):
        spec.epsilon = 5.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        spec.upper[0] = 100.0  # type: ignore[index]
    for clone in (copy.deepcopy(spec), pickle.loads(pickle.dumps(spec))):
        assert clone == spec and not clone.upper.flags.writeable


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_the_callers_bound_array_cannot_change_the_spec(kind):
    upper = np.array([1.0, 2.0, 3.0]) if kind == "numpy" else torch.tensor([1.0, 2.0, 3.0])
    spec = NoiseSpec(Laplace(1.0), lower=0.0, upper=upper)
    x = torch.rand(5, 3)
    before = ldp_noise(x, spec, seed=7, offset=0)
    upper[0] = 1e-3  # the caller edits its own array afterwards
    assert spec.upper.tolist() == [1.0, 2.0, 3.0] and not spec.upper.flags.writeable
    assert not np.shares_memory(spec.upper, np.asarray(upper))
    assert torch.equal(ldp_noise(x, spec, seed=7, offset=0), before)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        (dict(epsilon=0.0), ValueError, "epsilon must be a finite number > 0"),
        (dict(epsilon="1"), TypeError, "epsilon must be a real number"),
        (dict(epsilon=1.0, mechanism="gaussian"), ValueError, "needs delta"),
        (dict(epsilon=1.0, delta=1e-5), ValueError, "delta applies to mechanism='gaussian'"),
        (dict(epsilon=1.0, levels=10), ValueError, "levels applies"),
        (dict(epsilon=1.0, mechanism="exponential"), ValueError, "mechanism must be one of"),
        (dict(epsilon=1.0, unit="pixel"), ValueError, "unit must be 'feature' or 'record'"),
        (dict(epsilon=1.0, clamp="no"), TypeError, "clamp must be True or False"),
        (
            dict(epsilon=1.0, mechanism="discrete_laplace", clamp=False),
            ValueError,
            "always clamps",
        ),
        (dict(epsilon=1.0, lower=1.0, upper=1.0), ValueError, "feature 0 has lower=1.0 >= upper"),
        (dict(epsilon=1.0, lower=[0.0, 2.0, 0.0]), ValueError, "feature 1 has lower=2.0"),
        (
            dict(epsilon=1.0, upper=[1.0, np.nan, 1.0]),
            ValueError,
            "upper must be finite; feature 1",
        ),
        (dict(epsilon=1.0, lower=-1e300), ValueError, r"lower must lie within float32's range"),
        (dict(epsilon=1.0, lower=["a"]), TypeError, "lower must be a number or a numeric array"),
        (dict(epsilon=1.0, lower=np.array([True])), TypeError, "got dtype bool"),
        (dict(epsilon=Laplace(1.0), mechanism="laplace"), TypeError, "give one"),
        (dict(epsilon=1.0, mechanism=Laplace(1.0)), TypeError, "holds its parameters"),
        (dict(mechanism=Gaussian(1.0, 1e-5), delta=1e-5), TypeError, "delta="),
    ],
)
def test_a_spec_refuses_bad_values_with_the_ops_messages(kwargs, err, match):
    with pytest.raises(err, match=match):
        NoiseSpec(**kwargs)
    if not isinstance(kwargs.get("epsilon"), Mechanism):  # the op, given the same keywords
        args = dict(lower=0.0, upper=1.0)
        args.update(kwargs)
        with pytest.raises(err, match=match):
            ldp_noise(torch.rand(2, 3), **args)


def test_a_spec_takes_the_three_mechanism_types_only():
    class Renamed(Laplace):
        name = "gaussian"

    with pytest.raises(TypeError, match="Laplace, Gaussian or DiscreteLaplace value"):
        NoiseSpec(Renamed(1.0))
    with pytest.raises(TypeError, match="got Mechanism"):
        NoiseSpec(mechanism=Mechanism())


def test_shapes_are_checked_against_the_input():
    spec = NoiseSpec(Laplace(1.0), lower=np.zeros(4))  # fine as a value: no input yet
    with pytest.raises(ValueError, match=r"lower has shape \(4,\), which does not broadcast"):
        ldp_noise(torch.rand(2, 3), spec)
    assert ldp_noise(torch.rand(2, 4), spec, seed=1).shape == (2, 1, 4)


# ------------------------------------------------------------------ one spec or the keywords


@pytest.mark.parametrize(
    "extra",
    [
        dict(epsilon=1.0),
        dict(lower=0.0),
        dict(mechanism="laplace"),  # even the default value, given explicitly
        dict(unit="feature"),
        dict(clamp=True),
        dict(delta=1e-5),
        dict(levels=8),
    ],
)
def test_a_spec_and_keywords_together_are_refused(extra):
    spec = NoiseSpec(Laplace(1.0))
    x = torch.rand(2, 3)
    name = next(iter(extra))
    with pytest.raises(TypeError, match=rf"got noise= and {name}=.*not both"):
        ldp_noise(x, spec, **extra)
    with pytest.raises(TypeError, match="not both"):
        plan_ldp_noise(x, spec, **extra)


def test_the_op_needs_a_spec_or_the_required_keywords():
    x = torch.rand(2, 3)
    with pytest.raises(TypeError, match=r"needs noise= .* missing: epsilon, lower, upper"):
        ldp_noise(x)
    with pytest.raises(TypeError, match="missing: upper"):
        ldp_noise(x, epsilon=1.0, lower=0.0)
    with pytest.raises(TypeError, match=r"noise must be a noiseforge\.ops\.NoiseSpec, got dict"):
        ldp_noise(x, {"epsilon": 1.0})
    # a mechanism value as mechanism= holds epsilon: the keyword form needs only the domain
    a = ldp_noise(x, mechanism=Gaussian(1.0, 1e-5), lower=0.0, upper=1.0, seed=3, offset=0)
    b = ldp_noise(
        x, epsilon=1.0, mechanism="gaussian", delta=1e-5, lower=0.0, upper=1.0, seed=3, offset=0
    )
    assert torch.equal(a, b)


# ------------------------------------------------------------------ where things live


def test_calibrate_noise_lives_with_the_formulas_and_keeps_its_old_paths():
    import importlib

    import noiseforge.ops as ops
    import noiseforge.ops.calibration as calibration

    # (the package's attribute ldp_noise is the op function; the module is in sys.modules)
    op_module = importlib.import_module("noiseforge.ops.ldp_noise")

    assert ops.calibrate_noise is calibration.calibrate_noise is op_module.calibrate_noise
    imported = set()
    for node in ast.walk(ast.parse(Path(calibration.__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not {m for m in imported if m.startswith("noiseforge.ops.")}, imported


def test_the_ldp_package_keeps_its_noisespec():
    from noiseforge.ldp import DiscreteLaplace as LdpDiscrete
    from noiseforge.ldp import NoiseSpec as LdpSpec
    from noiseforge.ldp.pipeline import NoiseSpec as PipelineSpec

    assert LdpSpec is PipelineSpec is NoiseSpec and LdpDiscrete is DiscreteLaplace


def test_no_deprecated_call_inside_the_package():
    """The package passes specs itself; only users' old code meets the warning."""
    x = torch.rand(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        ldp_noise(x, NoiseSpec(1.0), seed=1)


def test_the_calibration_matches_the_formulas_worked_by_hand():
    # Laplace, eps 2 on [0, 4]: b = 4 / 2 per feature; per record over 3 features each
    # feature gets eps 2/3, so b = 4 / (2/3) = 6; K copies cost K times one release
    x = torch.zeros(5, 3)
    per_feature = plan_ldp_noise(x, NoiseSpec(Laplace(2.0), 0.0, 4.0), copies=2).calibration
    assert per_feature.scale.tolist() == [2.0, 2.0, 2.0]
    assert per_feature.epsilon_total == pytest.approx(2 * 3 * 2.0)
    per_record = plan_ldp_noise(
        x, NoiseSpec(Laplace(2.0), 0.0, 4.0, unit="record"), copies=2
    ).calibration
    assert per_record.scale.tolist() == [6.0, 6.0, 6.0]
    assert per_record.epsilon_total == pytest.approx(2 * 2.0)


def test_a_spec_bound_cannot_be_made_writeable_again():
    spec = NoiseSpec(Laplace(1.0), np.zeros(3), np.ones(3))
    for bound in (spec.lower, spec.upper):
        with pytest.raises(ValueError, match="WRITEABLE"):
            bound.setflags(write=True)


def test_replace_is_how_a_frozen_spec_changes():
    spec = NoiseSpec(Gaussian(1.0, 1e-5), 0.0, 2.0)
    assert spec.replace(epsilon=3.0) == NoiseSpec(Gaussian(3.0, 1e-5), 0.0, 2.0)
    assert spec.replace(mechanism="laplace") == NoiseSpec(Laplace(1.0), 0.0, 2.0)
    assert spec.replace(upper=5.0, unit="record").upper == 5.0
    assert spec.replace(mechanism=DiscreteLaplace(2.0, levels=8)).mechanism.levels == 8
    with pytest.raises(TypeError, match="unknown parameters"):
        spec.replace(eps=1.0)


def test_comparing_a_mechanism_with_its_old_string_warns_and_still_answers():
    spec = NoiseSpec(epsilon=1.0, mechanism="gaussian", delta=1e-5)
    with pytest.warns(DeprecationWarning, match="mechanism.name"):
        assert spec.mechanism == "gaussian"
    with pytest.warns(DeprecationWarning):
        assert spec.mechanism != "laplace"
    assert spec.mechanism.name == "gaussian"
