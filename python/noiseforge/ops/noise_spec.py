"""Noise parameters as values: the mechanism types and :class:`NoiseSpec`.

A mechanism is the noise distribution with its privacy parameters --
:class:`Laplace` (epsilon), :class:`Gaussian` (epsilon, delta) and
:class:`DiscreteLaplace` (epsilon, levels) -- checked when it is built and
calibrated by the formulas of :mod:`noiseforge.ops.calibration`. A
:class:`NoiseSpec` is one mechanism with the domain it is calibrated on
(``lower``, ``upper``), the unit one epsilon covers and whether outputs are
clamped: everything that describes the noise rather than one call. The same
spec is accepted by :func:`noiseforge.ops.ldp_noise`,
:func:`noiseforge.ops.ldp_noise.plan_ldp_noise`, :func:`noiseforge.ldp.release`
and :func:`noiseforge.ldp.add_noise_copies` (as ``noise=``); their keyword form
(``epsilon=``, ``lower=``, ...) builds one through :func:`resolve_noise`, so both
forms take one code path.

Every value here is immutable and hashable: a per-feature bound is copied into a
read-only array, so the array the caller passed can change without changing the
spec.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from noiseforge.ops.calibration import (
    NoiseCalibration,
    _bound_array,
    _check_bound_values,
    _check_epsilon,
    _check_gaussian_delta,
    _check_levels,
    _check_mechanism_name,
    _check_pure_delta,
    _check_unit,
    analytic_gaussian_sigma,
    calibrate_noise,
    geometric_alpha,
    laplace_scale,
)

__all__ = [
    "Bound",
    "DiscreteLaplace",
    "Gaussian",
    "Laplace",
    "Mechanism",
    "NoiseSpec",
    "mechanism_from_name",
    "resolve_noise",
]

#: what a domain bound may be given as: a number, or an array (or tensor) that
#: broadcasts to the feature shape of the input
Bound = float | int | torch.Tensor | np.ndarray


# --------------------------------------------------------------------------- mechanisms


class Mechanism:
    """Base of the mechanism types: ``name`` (the string the op and the ledger use),
    ``epsilon``, ``delta`` (Gaussian only, else None) and ``levels`` (discrete Laplace
    only, else None), and :meth:`calibrate`."""

    name: ClassVar[str]
    epsilon: float
    delta: ClassVar[float | None] = None
    levels: ClassVar[int | None] = None

    def calibrate(
        self, lower: Any, upper: Any, *, unit: str = "feature", copies: int = 1
    ) -> NoiseCalibration:
        """Per-feature noise scales and the guarantee on the (D,) domain ``[lower, upper]``.

        ``unit`` is ``"feature"`` or ``"record"``; ``copies`` (K) noisy copies of a
        record cost K times one. Delegates to
        :func:`noiseforge.ops.calibration.calibrate_noise` and raises what it raises.
        """
        return calibrate_noise(
            mechanism=self.name,
            epsilon=self.epsilon,
            delta=self.delta,
            lower=lower,
            upper=upper,
            unit=unit,
            levels=self.levels,
            copies=copies,
        )

    # value semantics: equal when the type and every field are equal
    def _fields(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            # specs once held the mechanism as its name: keep `spec.mechanism == "gaussian"`
            # true where it was, and say how to write it now
            warnings.warn(
                "comparing a mechanism with a string is deprecated: compare "
                f"spec.mechanism.name (here {self.name!r}) or use isinstance",
                DeprecationWarning,
                stacklevel=2,
            )
            return self.name == other
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._fields()))


@dataclass(frozen=True, eq=False)
class Laplace(Mechanism):
    """The Laplace mechanism, pure eps-LDP: scale ``b = sensitivity / epsilon``.

    Parameters
    ----------
    epsilon:
        Privacy parameter, a finite real number > 0 (per feature or per record,
        as the spec's ``unit`` says).
    """

    epsilon: float
    name: ClassVar[str] = "laplace"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _check_epsilon(self.epsilon))

    def scale(self, sensitivity: float) -> float:
        """The Laplace scale ``b`` for an L1 ``sensitivity``."""
        return laplace_scale(self.epsilon, sensitivity)


@dataclass(frozen=True, eq=False)
class Gaussian(Mechanism):
    """The analytic Gaussian mechanism (Balle & Wang, 2018), (eps, delta)-LDP.

    Parameters
    ----------
    epsilon:
        Privacy parameter, a finite real number > 0.
    delta:
        In (0, 1); required (the default None is refused with a hint).
    """

    epsilon: float
    delta: float | None = None  # type: ignore[misc]  # a field here, None on the base
    name: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _check_epsilon(self.epsilon))
        object.__setattr__(self, "delta", _check_gaussian_delta(self.delta))

    def sigma(self, sensitivity: float) -> float:
        """The smallest sigma giving (epsilon, delta) for an L2 ``sensitivity``."""
        assert self.delta is not None
        return analytic_gaussian_sigma(self.epsilon, self.delta, sensitivity)


@dataclass(frozen=True, eq=False)
class DiscreteLaplace(Mechanism):
    """The hardened mechanism: inputs quantised to ``levels`` grid points per feature,
    two-sided geometric integer noise sampled by integer comparisons, clamped to the
    grid (pure eps-LDP, exact for the sampled distribution).

    Parameters
    ----------
    epsilon:
        Privacy parameter, a finite real number > 0.
    levels:
        Grid points per feature, an int in [2, 4097]; None: 256, or
        ``upper - lower + 1`` for uint8 input (decided per call by the op).
    """

    epsilon: float
    levels: int | None = None  # type: ignore[misc]  # a field here, None on the base
    name: ClassVar[str] = "discrete_laplace"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _check_epsilon(self.epsilon))
        if self.levels is not None:
            object.__setattr__(self, "levels", _check_levels(self.levels))

    def alpha(self, grid_sensitivity: int) -> float:
        """The geometric noise's ``alpha = exp(-epsilon / grid_sensitivity)``."""
        return geometric_alpha(self.epsilon, grid_sensitivity)


_TYPES: dict[str, type[Mechanism]] = {m.name: m for m in (Laplace, Gaussian, DiscreteLaplace)}


def mechanism_from_name(
    name: str, epsilon: Any, delta: Any = None, levels: Any = None
) -> Mechanism:
    """The mechanism value for the keyword form ``mechanism=name, epsilon=, delta=,
    levels=`` (the op's strings: ``"laplace"``, ``"gaussian"``, ``"discrete_laplace"``).

    Refuses a parameter the mechanism does not take (delta other than None/0 beside a
    pure mechanism, levels beside a continuous one) with the op's messages.
    """
    name = _check_mechanism_name(name)
    if name != "discrete_laplace" and levels is not None:
        raise ValueError("levels applies to mechanism='discrete_laplace' only")
    if name == "gaussian":
        return Gaussian(epsilon, delta)
    mechanism = Laplace(epsilon) if name == "laplace" else DiscreteLaplace(epsilon, levels)
    _check_pure_delta(name, delta)
    return mechanism


# --------------------------------------------------------------------------- the spec


class _Default:
    """A keyword's default, told apart from the same value given explicitly: the noise
    keywords of the ops may not be given beside a :class:`NoiseSpec`."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)

    # code that reads the signature (inspect, docs) sees the default it always had
    def __eq__(self, other: object) -> bool:
        return self.value == (other.value if isinstance(other, _Default) else other)

    def __hash__(self) -> int:
        return hash(self.value)


_DEFAULT_MECHANISM: Any = _Default("laplace")
_DEFAULT_UNIT: Any = _Default("feature")
_DEFAULT_CLAMP: Any = _Default(True)


def _given(value: Any) -> Any:
    return value.value if isinstance(value, _Default) else value


def _spec_bound(name: str, value: Any) -> float | np.ndarray:
    """A bound as the spec keeps it: a float, or a read-only copy of the array."""
    arr = _bound_array(name, value)
    _check_bound_values(name, np.asarray(arr, dtype=np.float64).reshape(-1))
    if arr.ndim == 0:
        return float(arr)
    # never the caller's memory (nor a tensor's), and an array over immutable bytes:
    # numpy refuses to make it writeable again
    data = np.ascontiguousarray(arr)
    return np.frombuffer(data.tobytes(), dtype=data.dtype).reshape(data.shape)


def _check_order(lower: float | np.ndarray, upper: float | np.ndarray) -> None:
    """lower < upper wherever the two broadcast together, as the op compares them (in
    float32); bounds that do not broadcast are reported against the input's shape."""
    lo = np.asarray(lower, dtype=np.float64).astype(np.float32)
    hi = np.asarray(upper, dtype=np.float64).astype(np.float32)
    try:
        lo, hi = np.broadcast_arrays(lo, hi)
    except ValueError:
        return
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    bad = np.flatnonzero(~(lo < hi))
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"lower must be < upper for every feature; feature {j} has lower={lo[j]} "
            f">= upper={hi[j]}"
        )


def _bound_key(bound: float | np.ndarray) -> tuple:
    if isinstance(bound, np.ndarray):
        return ("array", bound.shape, bound.dtype.str, bound.tobytes())
    return ("number", bound)


def _rebuild(mechanism: Mechanism, lower: Any, upper: Any, unit: str, clamp: bool) -> NoiseSpec:
    return NoiseSpec(mechanism, lower, upper, unit=unit, clamp=clamp)


@dataclass(frozen=True, init=False, eq=False)
class NoiseSpec:
    """The noise of a release: a mechanism, its domain, its unit and the clamp.

    Build it from a mechanism value::

        NoiseSpec(Gaussian(epsilon=1.0, delta=1e-5), lower=-1.0, upper=1.0)
        NoiseSpec(mechanism=DiscreteLaplace(2.0, levels=16), lower=0.0, upper=1.0)

    or from the keywords the ops take (the form this class has always had)::

        NoiseSpec(epsilon=1.0, lower=0.0, upper=1.0, mechanism="gaussian", delta=1e-5)

    and pass it as ``noise=`` to :func:`noiseforge.ops.ldp_noise`,
    :func:`noiseforge.ldp.release` or :func:`noiseforge.ldp.add_noise_copies`.

    Parameters
    ----------
    epsilon:
        The privacy parameter (keyword form), or a :class:`Mechanism` value.
    lower, upper:
        The domain: numbers, or arrays (tensors) that broadcast to the feature shape
        of the input; default [0, 1]. Arrays are copied into read-only arrays. Each
        value must be finite and within float32; ``lower < upper`` is checked here
        where the two broadcast together, and against the input's features by the op.
    mechanism:
        ``"laplace"`` (default), ``"gaussian"`` or ``"discrete_laplace"`` with
        ``epsilon`` (and ``delta`` / ``levels``), or a :class:`Mechanism` value (then
        ``epsilon``, ``delta`` and ``levels`` stay unset: the mechanism holds them).
    delta:
        Gaussian only, in (0, 1).
    unit:
        ``"feature"`` (each feature an eps-LDP release) or ``"record"``.
    levels:
        discrete_laplace only: grid points per feature (default 256, or
        ``upper - lower + 1`` for uint8 input).
    clamp:
        Clamp noisy values back to the domain (post-processing, free); always on for
        discrete_laplace.

    Raises
    ------
    TypeError, ValueError
        With the messages of :func:`noiseforge.ops.ldp_noise` for the same values.

    Notes
    -----
    A spec is immutable, hashable and compares by value. ``copies`` is not part of
    it: how many noisy copies to draw is a choice of each call (and of its charge).
    """

    mechanism: Mechanism
    lower: float | np.ndarray
    upper: float | np.ndarray
    unit: str
    clamp: bool

    def __init__(
        self,
        epsilon: float | Mechanism | None = None,
        lower: Bound = 0.0,
        upper: Bound = 1.0,
        mechanism: str | Mechanism = _DEFAULT_MECHANISM,
        delta: float | None = None,
        unit: str = "feature",
        *,
        levels: int | None = None,
        clamp: bool = True,
    ) -> None:
        if isinstance(epsilon, Mechanism):
            if not isinstance(mechanism, _Default):
                raise TypeError(
                    f"NoiseSpec got the mechanism {epsilon!r} and mechanism={mechanism!r}; give one"
                )
            mechanism, epsilon = epsilon, None
        mechanism = _given(mechanism)
        if isinstance(mechanism, Mechanism):
            extra = [
                n
                for n, v in (("epsilon", epsilon), ("delta", delta), ("levels", levels))
                if v is not None
            ]
            if extra:
                raise TypeError(
                    f"NoiseSpec got {mechanism!r} and {', '.join(n + '=' for n in extra)}: "
                    "the mechanism value holds its parameters; give them in it"
                )
            if type(mechanism) not in _TYPES.values():  # the op runs these three only
                raise TypeError(
                    f"mechanism must be a Laplace, Gaussian or DiscreteLaplace value (or its "
                    f"name), got {type(mechanism).__name__}"
                )
            mech = mechanism
        else:
            mech = mechanism_from_name(mechanism, epsilon, delta, levels)
        if not isinstance(clamp, bool | np.bool_):
            raise TypeError(f"clamp must be True or False, got {clamp!r}")
        if mech.name == "discrete_laplace" and not clamp:
            raise ValueError(
                "discrete_laplace always clamps to the grid (the truncated geometric "
                "mechanism); call it with clamp=True"
            )
        lo = _spec_bound("lower", lower)
        hi = _spec_bound("upper", upper)
        _check_order(lo, hi)
        for name, value in (
            ("mechanism", mech),
            ("lower", lo),
            ("upper", hi),
            ("unit", _check_unit(unit)),
            ("clamp", bool(clamp)),
        ):
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ reading
    @property
    def epsilon(self) -> float:
        """The mechanism's epsilon (per feature or per record, as ``unit`` says)."""
        return self.mechanism.epsilon

    @property
    def delta(self) -> float | None:
        """The mechanism's delta (Gaussian), else None."""
        return self.mechanism.delta

    @property
    def levels(self) -> int | None:
        """The mechanism's grid points per feature (discrete Laplace), else None."""
        return self.mechanism.levels

    def kwargs(self) -> dict[str, Any]:
        """The spec as the keyword arguments of :func:`noiseforge.ops.ldp_noise`.

        .. deprecated::
            Pass the spec itself (``noise=spec``) to ``ldp_noise``, ``release`` and
            ``add_noise_copies``. ``levels`` and ``clamp`` are included only when
            they differ from their defaults (as specs built before they existed).
        """
        warnings.warn(
            "NoiseSpec.kwargs() is deprecated: pass the spec itself as noise= to "
            "ldp_noise, release and add_noise_copies",
            DeprecationWarning,
            stacklevel=2,
        )
        out: dict[str, Any] = dict(
            epsilon=self.epsilon,
            lower=self.lower,
            upper=self.upper,
            mechanism=self.mechanism.name,
            delta=self.delta,
            unit=self.unit,
        )
        if self.levels is not None:
            out["levels"] = self.levels
        if not self.clamp:
            out["clamp"] = False
        return out

    def replace(self, **changes: Any) -> NoiseSpec:
        """A copy with some parameters changed: ``epsilon``, ``delta``, ``levels``,
        ``mechanism`` (a name or a :class:`Mechanism`), ``lower``, ``upper``, ``unit``,
        ``clamp``. (A spec is frozen; this is how ``spec.epsilon = e`` and
        ``dataclasses.replace(spec, epsilon=e)`` are written now.)"""
        unknown = set(changes) - {
            "epsilon",
            "delta",
            "levels",
            "mechanism",
            "lower",
            "upper",
            "unit",
            "clamp",
        }
        if unknown:
            raise TypeError(f"NoiseSpec.replace() got unknown parameters {sorted(unknown)}")
        bounds = {k: changes.get(k, getattr(self, k)) for k in ("lower", "upper", "unit", "clamp")}
        mechanism = changes.get("mechanism", self.mechanism)
        if isinstance(mechanism, Mechanism) and not {"epsilon", "delta", "levels"} & set(changes):
            return NoiseSpec(mechanism, **bounds)
        name = mechanism.name if isinstance(mechanism, Mechanism) else mechanism
        same = name == self.mechanism.name
        params = {
            "epsilon": changes.get("epsilon", self.epsilon),
            "delta": changes.get("delta", self.delta if same else None),
            "levels": changes.get("levels", self.levels if same else None),
        }
        return NoiseSpec(mechanism=name, **params, **bounds)

    # ------------------------------------------------------------------ value semantics
    def _key(self) -> tuple:
        return (
            self.mechanism,
            _bound_key(self.lower),
            _bound_key(self.upper),
            self.unit,
            self.clamp,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoiseSpec):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple:
        # rebuilt through __init__, so an unpickled spec's arrays are read-only again
        return (_rebuild, (self.mechanism, self.lower, self.upper, self.unit, self.clamp))


def resolve_noise(
    noise: NoiseSpec | None,
    caller: str,
    *,
    epsilon: Any = None,
    lower: Any = None,
    upper: Any = None,
    mechanism: Any = _DEFAULT_MECHANISM,
    delta: Any = None,
    unit: Any = _DEFAULT_UNIT,
    levels: Any = None,
    clamp: Any = _DEFAULT_CLAMP,
) -> NoiseSpec:
    """The :class:`NoiseSpec` of a call: ``noise`` itself, or one built from the keyword
    form (``epsilon``, ``lower`` and ``upper`` required). Giving both is a TypeError,
    as is a ``noise`` that is not a NoiseSpec; ``caller`` names the function in errors.
    """
    given = [
        name
        for name, value in (
            ("epsilon", epsilon),
            ("lower", lower),
            ("upper", upper),
            ("delta", delta),
            ("levels", levels),
        )
        if value is not None
    ] + [
        name
        for name, value in (("mechanism", mechanism), ("unit", unit), ("clamp", clamp))
        if not isinstance(value, _Default)
    ]
    if noise is not None:
        if not isinstance(noise, NoiseSpec):
            raise TypeError(
                f"{caller}: noise must be a noiseforge.ops.NoiseSpec, got {type(noise).__name__}"
            )
        if given:
            raise TypeError(
                f"{caller} got noise= and {', '.join(n + '=' for n in given)}: the NoiseSpec "
                "holds the noise parameters; give the spec or the keywords, not both"
            )
        return noise
    mechanism = _given(mechanism)
    keywords = {"epsilon": epsilon, "lower": lower, "upper": upper}
    if isinstance(mechanism, Mechanism):
        del keywords["epsilon"]  # the mechanism value holds it
    missing = [name for name, value in keywords.items() if value is None]
    if missing:
        raise TypeError(
            f"{caller} needs noise= (a NoiseSpec) or the keywords epsilon=, lower= and "
            f"upper=; missing: {', '.join(missing)}"
        )
    return NoiseSpec(
        epsilon,
        lower,
        upper,
        mechanism=mechanism,
        delta=delta,
        unit=_given(unit),
        levels=levels,
        clamp=_given(clamp),
    )
