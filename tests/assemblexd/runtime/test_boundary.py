"""The runtime package's public boundary: every name it exports resolves, and importing its
errors (as the CLI does, through ``assemblexd.errors``) does not load wasmtime or redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

import assemblexd.errors
import assemblexd.runtime as runtime


@pytest.mark.parametrize("name", runtime.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(runtime, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        runtime.Nope  # noqa: B018


def test_the_daemons_errors_are_the_runtimes() -> None:
    for name in ("AssemblexError", "GuestError", "CallTimeout", "Overloaded", "HostError"):
        assert getattr(assemblexd.errors, name) is getattr(runtime, name)


def test_the_cli_starts_without_wasmtime_or_redis() -> None:
    code = (
        "import sys, assemblexd.__main__, assemblexd.errors, assemblexd.runtime.errors\n"
        "print(sorted(m for m in ('wasmtime', 'redis') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_one_registry_gives_capabilities_metric_labels_and_dispatch() -> None:
    from assemblexd.metrics import Metrics
    from assemblexd.records import DEFAULT_CAPABILITIES, NAMESPACES
    from assemblexd.runtime.hostfuncs import NAMESPACE_HANDLERS

    assert NAMESPACES == tuple(NAMESPACE_HANDLERS) == DEFAULT_CAPABILITIES
    text = Metrics().render().decode()
    labels = {
        line.split('namespace="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("assemblex_host_calls_total{")
    }
    assert labels == {*NAMESPACE_HANDLERS, "other"}
