"""Turn a pytest-benchmark JSON file into the ratios of the README's table.

Usage: ``python benchmarks/report.py bench.json [--bandwidth-gbs 12]``. For each
group it prints the median time of every entry, the speed-up over the torch
peer measured in the same run, elements per second and, given the machine's
memory bandwidth, the fraction of it that the entry reaches.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("json")
    p.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="memory bandwidth of the machine in GB/s (e.g. from benchmarks/stream.py)",
    )
    args = p.parse_args()
    data = json.load(open(args.json))
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"]].append(b)
    print(data.get("machine_info", {}).get("cpu", {}).get("brand_raw", ""))
    for group, items in sorted(groups.items()):
        peers = [b for b in items if "peer" in b["name"]]
        # ratios are against the best peer measured in the same run
        peer = min(peers, key=lambda b: b["stats"]["median"]) if peers else None
        print(f"\n{group}")
        for b in sorted(items, key=lambda b: b["stats"]["median"]):
            med = b["stats"]["median"]
            elems = b["extra_info"].get("elements", 0)
            line = f"  {b['name']:<50} {med * 1e3:9.2f} ms  {elems / med / 1e6:9.1f} M elem/s"
            if peer is not None and b is not peer:
                line += f"  {peer['stats']['median'] / med:6.1f}x best peer"
            if args.bandwidth_gbs and b["extra_info"].get("bytes"):
                line += f"  {b['extra_info']['bytes'] / med / 1e9 / args.bandwidth_gbs:6.1%} of bandwidth"
            print(line)


if __name__ == "__main__":
    main()
