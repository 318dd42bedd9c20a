"""Replicated store: LWW registers, monotonic counters, blocking reads, delta sync (issue 4)."""

__all__: list[str] = []
