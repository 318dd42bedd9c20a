"""Graph figures of a simulated overlay, as the HyParView paper reports them.

* in-degree: for each node, how many active views hold it (min, mean, max, histogram);
* average shortest path: mean hop distance between nodes of the undirected active-view
  graph, by BFS from every node, or from a seeded sample of ``path_sources`` nodes when there
  are more (an unbiased estimate of the same mean);
* clustering coefficient: mean over nodes of the fraction of their neighbour pairs that are
  neighbours themselves (0 for nodes with fewer than two neighbours, as networkx counts);
* flood redundancy: the redundant payload copies per node that flooding the same graph would
  cost, ``(sum of degrees - 2(n - 1)) / n``, to compare with Plumtree's.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._sim import Simulation

__all__ = ["graph_metrics"]


def _adjacency(sim: Simulation) -> tuple[list[int], list[set[int]], list[int]]:
    """Live nodes, undirected neighbour sets, and in-degrees, from the active views."""
    n = sim.config.nodes
    live = sim.live()
    adjacency: list[set[int]] = [set() for _ in range(n)]
    in_degree = [0] * n
    for i in live:
        core = sim.cores[i]
        assert core is not None
        for peer in core.active_view():
            j = sim.index[peer]
            if sim.alive[j]:
                in_degree[j] += 1
                adjacency[i].add(j)
                adjacency[j].add(i)
    return live, adjacency, in_degree


def _shortest_paths(sources: list[int], adjacency: list[set[int]]) -> tuple[float, int]:
    """Mean hop distance from `sources` to the nodes they reach, and the largest one."""
    total = pairs = diameter = 0
    for source in sources:
        dist = {source: 0}
        queue = deque([source])
        while queue:
            node = queue.popleft()
            step = dist[node] + 1
            for other in adjacency[node]:
                if other not in dist:
                    dist[other] = step
                    queue.append(other)
        total += sum(dist.values())
        pairs += len(dist) - 1
        diameter = max(diameter, max(dist.values()))
    return (total / pairs if pairs else 0.0), diameter


def _clustering(live: list[int], adjacency: list[set[int]]) -> float:
    total = 0.0
    for node in live:
        neighbours = adjacency[node]
        k = len(neighbours)
        if k < 2:
            continue
        links = sum(len(adjacency[a] & neighbours) for a in neighbours) // 2
        total += 2 * links / (k * (k - 1))
    return total / len(live) if live else 0.0


def _components(live: list[int], adjacency: list[set[int]]) -> int:
    seen: set[int] = set()
    count = 0
    for start in live:
        if start in seen:
            continue
        count += 1
        seen.add(start)
        stack = [start]
        while stack:
            for other in adjacency[stack.pop()]:
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
    return count


def graph_metrics(sim: Simulation) -> dict[str, Any]:
    """The figures above for the live part of `sim`'s overlay."""
    live, adjacency, in_degree = _adjacency(sim)
    degrees = [in_degree[i] for i in live]
    histogram: dict[str, int] = {}
    for d in sorted(degrees):
        histogram[str(d)] = histogram.get(str(d), 0) + 1
    sources = live
    if len(live) > sim.config.path_sources:
        sources = sorted(sim.rng.sample(live, sim.config.path_sources))
    avg_path, diameter = _shortest_paths(sources, adjacency)
    n = len(live)
    undirected_degree = sum(len(adjacency[i]) for i in live)
    return {
        "in_degree": {
            "min": min(degrees, default=0),
            "mean": sum(degrees) / n if n else 0.0,
            "max": max(degrees, default=0),
            "histogram": histogram,
        },
        "avg_shortest_path": avg_path,
        "max_shortest_path": diameter,
        "path_sources": len(sources),
        "clustering": _clustering(live, adjacency),
        "components": _components(live, adjacency),
        "flood_redundancy": (undirected_degree - 2 * (n - 1)) / n if n else 0.0,
    }
