"""``noiseforge info``: what was built and which backend can run where."""

from __future__ import annotations

import platform

import torch

from noiseforge import _native
from noiseforge._version import __version__
from noiseforge.ops import _backends as B
from noiseforge.ops import registry


def backend_table() -> list[tuple[str, str, str, str]]:
    """Rows (op, backend, device, status) for CPU and, when present, CUDA tensors."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    rows = []
    for op in registry.all_ops():
        for device in devices:
            plan = op.example_inputs(device)
            for rec in op.records():
                why = rec.reasons(plan)
                auto = " (auto)" if device.type in rec.auto_devices else ""
                status = f"usable{auto}" if not why else "unavailable: " + "; ".join(why)
                rows.append((op.name, rec.name, device.type, status))
    return rows


def info_text() -> str:
    build = _native.build_info()
    lines = [
        f"noiseforge {__version__}",
        f"python {platform.python_version()} on {platform.machine()}, torch {torch.__version__}",
    ]
    if build:
        lines += [
            f"native module: built with {build['compiler']} (C++ {build['cxx_standard']})",
            f"  OpenMP: {build['openmp'] or 'off'}; CPU kernels: {build['cpu_isa']} "
            f"(chosen at run time); torch threads: {torch.get_num_threads()}",
            f"  HNSW distance kernels: {build.get('index_distances', 'n/a')} (chosen at run time)",
            "  CUDA: "
            + (
                f"on (runtime {build['cuda_runtime']}, archs {build['cuda_architectures']})"
                if build.get("cuda")
                else "off (built without nvcc)"
            ),
        ]
    else:
        lines.append(f"native module: unavailable ({_native.native_error()})")
    tv = B.triton_version()
    interp = " (interpreter on: TRITON_INTERPRET=1)" if B.triton_interpreting() else ""
    lines.append(f"triton: {tv}{interp}" if tv else f"triton: {'; '.join(B.triton_reasons())}")
    lines.append("")
    rows = backend_table()
    header = ("op", "backend", "device", "status")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=True)))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, [*widths, 0], strict=True)).rstrip())
    return "\n".join(lines)
