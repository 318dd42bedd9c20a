"""HyParView partial mesh, broadcast, discovery and a simulator (issue 5)."""

__all__: list[str] = []
