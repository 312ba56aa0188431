"""Check a repaired noiseforge wheel: what its extension links and which symbol versions it needs.

    python scripts/check_wheel.py dist/noiseforge-*.whl [--max-glibc 2.28]

Fails (exit 1) when the wheel bundles an OpenMP runtime (a second one beside torch's), when
its extension needs a library outside the manylinux set plus libgomp.so.1, a glibc symbol
version newer than --max-glibc, or any GLIBCXX/CXXABI version (libstdc++ must be linked in),
or when it holds no extension or more than one. Prints the tag, the size and the facts.
Uses pyelftools (installed with auditwheel).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import zipfile

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

ALLOWED_NEEDED = {
    "libgomp.so.1",  # torch's copy, loaded before the extension (noiseforge._native)
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
}


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def inspect(data: bytes) -> tuple[list[str], dict[str, list[str]]]:
    elf = ELFFile(io.BytesIO(data))
    needed: list[str] = []
    versions: dict[str, list[str]] = {}
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            needed += [t.needed for t in section.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
        if isinstance(section, GNUVerNeedSection):
            for verneed, auxiliaries in section.iter_versions():
                versions[verneed.name] = sorted(a.name for a in auxiliaries)
    return needed, versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("--max-glibc", default="2.28")
    args = parser.parse_args(argv)
    problems: list[str] = []
    with zipfile.ZipFile(args.wheel) as zf:
        names = zf.namelist()
        size = sum(i.file_size for i in zf.infolist())
        extensions = [n for n in names if re.search(r"/_C\..*\.so$", n)]
        bundled = [n for n in names if ".libs/" in n]
        if len(extensions) != 1:
            problems.append(f"expected one noiseforge/_C extension, found {extensions}")
        problems += [
            f"bundles {n} (the OpenMP runtime must be torch's)" for n in bundled if "gomp" in n
        ]
        for name in extensions:
            needed, versions = inspect(zf.read(name))
            print(f"{name}: NEEDED {', '.join(needed)}")
            problems += [
                f"{name} needs {lib}"
                for lib in needed
                if lib not in ALLOWED_NEEDED
            ]
            for lib, vers in sorted(versions.items()):
                print(f"  {lib}: {' '.join(vers)}")
                for v in vers:
                    family, _, number = v.partition("_")
                    if family in ("GLIBCXX", "CXXABI"):
                        problems.append(f"{name} needs {v} from {lib}: libstdc++ is not linked in")
                    elif family == "GLIBC" and re.fullmatch(r"[0-9.]+", number):
                        if _version_key(number) > _version_key(args.max_glibc):
                            problems.append(f"{name} needs {v} (newer than glibc {args.max_glibc})")
    print(
        f"{os.path.basename(args.wheel)}: {os.path.getsize(args.wheel) / 1e6:.2f} MB ({size / 1e6:.2f} MB unpacked), bundled libraries: {bundled or 'none'}"
    )
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
