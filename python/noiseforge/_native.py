"""Loading of the compiled extension ``noiseforge._C``.

A missing or broken native module is not an import error of the package: the
``cpu`` and ``cuda`` backends then report "unavailable, because ..." and the
``torch`` reference keeps working.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any


@functools.cache
def _load() -> tuple[ModuleType | None, str]:
    try:
        from noiseforge import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - depends on the build
        return None, f"the native module noiseforge._C did not import ({exc})"
    return _C, ""


def native() -> ModuleType | None:
    """The native module, or None when it is not built."""
    return _load()[0]


def native_error() -> str:
    """Why the native module is unavailable ('' when it loaded)."""
    return _load()[1]


@functools.cache
def build_info() -> dict[str, Any]:
    """Facts about the native build (empty when the module is missing)."""
    mod = native()
    return dict(mod.build_info()) if mod is not None else {}


def cuda_built() -> bool:
    return bool(build_info().get("cuda", False))


@functools.cache
def cuda_runtime_reason() -> str:
    """'' when the CUDA backend can launch kernels, else the reason it cannot."""
    mod = native()
    if mod is None:
        return native_error()
    if not cuda_built():
        return "noiseforge was built without CUDA (nvcc was not found or NOISEFORGE_CUDA=OFF)"
    count, message = mod.cuda_device_count()
    if count < 0:
        return f"the CUDA runtime reports no usable device ({message})"
    if count == 0:
        return "no CUDA device is visible"
    return ""
