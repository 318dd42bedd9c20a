"""The Hypothesis settings every fuzzer here starts from.

``ASSEMBLEX_FUZZ_SCALE`` multiplies every example count: ``ASSEMBLEX_FUZZ_SCALE=20`` for a
longer campaign (docs/operations.md); the suite runs at 1.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["SCALE", "fuzz_settings"]

SCALE = int(os.environ.get("ASSEMBLEX_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int, *also_suppress: HealthCheck) -> settings:
    """``examples`` times SCALE examples, no deadline, and no health check about slow or large
    inputs (fuzzers make both on purpose)."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, *also_suppress],
    )
