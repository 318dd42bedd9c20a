#!/usr/bin/env python3
"""Run the membership simulator over a grid of sizes and failure rates; print a table.

    .venv/bin/python scripts/bench_membership.py                     # 1,000 and 10,000 nodes
    .venv/bin/python scripts/bench_membership.py --nodes 1000 --jobs 2 --out results.json

Each run is ``python -m membership.sim --nodes N --fail F --seed S --json`` in its own
process (at most ``--jobs`` at once, each bounded by ``--timeout``); the table is Markdown,
with the HyParView paper's figures beside ours. Runs are deterministic: the same seed gives
the same table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAILURES = (0.0, 0.5, 0.8, 0.9, 0.95)
# The HyParView paper (DSN 2007; 10,000 nodes, active 5 / passive 30), summed up: reliability
# about 100% up to 80-90% failed, about 90% at 95%; healing in 1-2 rounds below 80%. "-" where
# that summary gives no figure.
PAPER = {0.0: ("1.00", "-"), 0.5: ("~1.00", "1-2"), 0.8: ("~1.00", "-"),
         0.9: ("~0.9-1.0", "-"), 0.95: ("~0.90", "-")}  # fmt: skip


def run_one(nodes: int, fail: float, seed: int, timeout: float) -> dict[str, Any]:
    """One simulator run; its JSON figures plus the wall time it took."""
    started = time.monotonic()
    command = [sys.executable, "-m", "membership.sim", "--nodes", str(nodes)]
    command += ["--fail", str(fail), "--seed", str(seed), "--json"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    return figures


def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table of `results`."""
    lines = [
        "| nodes | failed | live | reliability (mean / first / last) | paper | healing rounds "
        "| paper | in-degree min/mean/max | avg shortest path | clustering "
        "| msgs per broadcast | redundant payloads: plumtree / flooding | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r["nodes"], r["failed_fraction"])):
        fail = r["failed_fraction"]
        paper_rel, paper_heal = PAPER.get(fail, ("", ""))
        deg = r["in_degree"]
        heal = "not within 30" if r["healing_rounds"] is None else str(r["healing_rounds"])
        lines.append(
            f"| {r['nodes']:,} | {fail:.0%} | {r['live_nodes']:,} "
            f"| {r['reliability']:.4f} / {r['reliability_first']:.4f} / "
            f"{r['reliability_last']:.4f} | {paper_rel} | {heal} | {paper_heal} "
            f"| {deg['min']} / {deg['mean']:.2f} / {deg['max']} | {r['avg_shortest_path']:.2f} "
            f"| {r['clustering']:.5f} | {r['messages_per_broadcast']:,.0f} "
            f"| {r['payload_redundancy']:.4f} / {r['flood_redundancy']:.2f} "
            f"| {r['wall_seconds']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, action="append", help="repeatable")
    parser.add_argument("--fail", type=float, action="append", help="repeatable")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--out", type=Path, help="also write the raw figures as JSON")
    parser.add_argument("--table-from", type=Path, help="only print the table of such a file")
    args = parser.parse_args(argv)
    if args.table_from is not None:
        print(table(json.loads(args.table_from.read_text())))
        return 0
    grid = [(n, f) for n in (args.nodes or [1000, 10000]) for f in (args.fail or FAILURES)]
    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, n, f, args.seed, args.timeout) for n, f in grid]
        for future in as_completed(futures):
            results.append(future.result())
            if args.out is not None:  # kept as runs finish: a long grid can be cut short
                args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
