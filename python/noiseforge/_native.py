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
    # torch first: a wheel's extension needs libgomp.so.1 and uses the copy torch loads,
    # so that one process holds one OpenMP runtime (scripts/build_wheels.sh).
    import torch  # noqa: F401

    try:
        from noiseforge import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # pragma: no cover - depends on the build
        hint = ""
        if "libgomp" in str(exc):
            hint = (
                "; this torch build does not provide libgomp.so.1 (GNU OpenMP): install a "
                "torch wheel from PyPI or download.pytorch.org, or the system's libgomp1 "
                "(apt-get install libgomp1)"
            )
        return None, f"the native module noiseforge._C did not import ({exc}){hint}"
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
