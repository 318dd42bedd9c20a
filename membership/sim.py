"""``python -m membership.sim --nodes N --fail F --seed S [--json]``.

Builds a HyParView overlay of N simulated nodes running the real protocol core, lets it
stabilise, crashes a fraction F of the nodes at once and broadcasts 100 messages; prints the
paper's figures (see `membership._sim` for the experiment). With ``--json`` the last line is
one JSON object. The same arguments give the same output, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

from ._sim import SimConfig, run_experiment

__all__ = ["main", "parse_args"]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("a fraction in [0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a positive integer")
    return value


def parse_args(argv: list[str] | None = None) -> tuple[SimConfig, bool]:
    """The experiment's configuration from the command line, and whether to print JSON."""
    parser = argparse.ArgumentParser(prog="python -m membership.sim", description=__doc__)
    parser.add_argument("--nodes", type=_positive, required=True, help="number of nodes")
    parser.add_argument("--fail", type=_fraction, default=0.0, help="fraction crashed at once")
    parser.add_argument("--seed", type=int, default=1, help="seed of the whole run")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--broadcasts", type=_positive, default=100)
    parser.add_argument("--active", type=_positive, default=5, help="active view size")
    parser.add_argument("--passive", type=_positive, default=30, help="passive view size")
    parser.add_argument("--cycles", type=_positive, default=50, help="stabilisation cycles")
    args = parser.parse_args(argv)
    base = SimConfig(nodes=args.nodes, fail=args.fail, seed=args.seed)
    membership = replace(base.hyparview, active_size=args.active, passive_size=args.passive)
    config = replace(
        base, broadcasts=args.broadcasts, stabilise_cycles=args.cycles, hyparview=membership
    )
    return config, bool(args.json)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _report(figures: dict[str, Any]) -> str:
    deg = figures["in_degree"]
    heal = figures["healing_rounds"]
    lines = [
        f"nodes {figures['nodes']}, active {figures['active_size']}, "
        f"passive {figures['passive_size']}, seed {figures['seed']}",
        f"stable overlay: in-degree min/mean/max {deg['min']}/{deg['mean']:.3f}/{deg['max']}, "
        f"avg shortest path {figures['avg_shortest_path']:.3f}, "
        f"clustering {figures['clustering']:.6f}, components {figures['components']}",
        f"plumtree on the stable overlay: {figures['messages_per_broadcast']:.1f} messages and "
        f"{figures['payload_redundancy']:.4f} redundant payloads per node and broadcast "
        f"(flooding: {figures['flood_redundancy']:.3f}; first broadcast "
        f"{figures['first_broadcast']['payload_redundancy']:.3f})",
        f"after {figures['failed_fraction']:.0%} failed ({figures['live_nodes']} live): "
        f"reliability {figures['reliability']:.4f} over {figures['broadcasts']} broadcasts"
        f" (first {figures['reliability_first']:.4f}, "
        f"last {figures['reliability_last']:.4f})",
        "healing: " + ("not within the cap" if heal is None else f"{heal} membership cycles"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one experiment; print the report (and JSON with ``--json``)."""
    config, json_out = parse_args(argv)
    started = time.process_time()
    figures = _round(run_experiment(config))
    print(_report(figures))
    print(f"(cpu {time.process_time() - started:.1f} s)", file=sys.stderr)
    if json_out:
        print(json.dumps(figures, sort_keys=True, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
