"""Root fixtures: the WAT test guests and a real Redis server; and the skip policy.

The plain functions live in `helpers.py` so that code outside fixtures (e2e tests, scripts)
can use them too.

Skip policy. A test marked ``@pytest.mark.required("<group>")`` is one a claim of the README
rests on (zeroconf discovery, partition healing, ...), and ``<group>`` names what it needs
from the machine (``netns``: root, iproute2 and network namespaces). When such a test skips,
the run's summary lists it and the session fails, unless ``$ASSEMBLEX_ALLOW_SKIP`` names its
group (comma-separated, or ``all``): a green run means the claims were tested, and a run
that could not test some says so.

Long runs. A test marked ``@pytest.mark.long`` takes minutes (a scale test): it is skipped
unless the ``-m`` expression names ``long`` (``pytest -m long tests/e2e/...``) or
``$ASSEMBLEX_LONG`` is ``1``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from helpers import WAT_DIR, RedisServerError, free_port, load_wat, run_redis_server

__all__ = ["free_port", "load_wat"]

ALLOW_SKIP_ENV = "ASSEMBLEX_ALLOW_SKIP"
LONG_ENV = "ASSEMBLEX_LONG"
_REQUIRED_SKIPS = pytest.StashKey[list[tuple[str, str, str]]]()
"""(test id, group, reason) of every skipped test marked ``required``."""


def allowed_skips() -> set[str]:
    """The groups ``$ASSEMBLEX_ALLOW_SKIP`` lets skip (``all``: every group)."""
    return {g.strip() for g in os.environ.get(ALLOW_SKIP_ENV, "").split(",") if g.strip()}


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REQUIRED_SKIPS] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``long`` unless asked for (``-m`` naming ``long``, or
    ``$ASSEMBLEX_LONG=1``)."""
    if os.environ.get(LONG_ENV) == "1" or "long" in str(config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason=f"a long run: select it with -m long (or {LONG_ENV}=1)")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker("required")
    if marker is not None and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        group = str(marker.args[0]) if marker.args else "required"
        item.config.stash[_REQUIRED_SKIPS].append((item.nodeid, group, reason))
    return report


def _refused_skips(config: pytest.Config) -> list[tuple[str, str, str]]:
    allowed = allowed_skips()
    if "all" in allowed:
        return []
    return [s for s in config.stash[_REQUIRED_SKIPS] if s[1] not in allowed]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.config.stash[_REQUIRED_SKIPS]
    if not skipped:
        return
    refused = _refused_skips(terminalreporter.config)
    terminalreporter.write_sep("=", "skipped tests that README claims rest on", yellow=True)
    for nodeid, group, reason in skipped:
        verdict = "FAILS THE RUN" if (nodeid, group, reason) in refused else "allowed"
        terminalreporter.write_line(f"{verdict} [{group}] {nodeid}: {reason}")
    if refused:
        groups = ",".join(sorted({g for _, g, _ in refused}))
        terminalreporter.write_line(
            f"these tests did not run, so the claims they test are untested here; give the"
            f" machine what they need (scripts/test installs it) or accept it with"
            f" {ALLOW_SKIP_ENV}={groups}",
            red=True,
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _refused_skips(session.config) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def wat_dir() -> Path:
    """The folder of the hand-written WAT guests, `guests/wat/`."""
    return WAT_DIR


@pytest.fixture(scope="session")
def wat() -> Callable[[str], bytes]:
    """`wat("echo")` gives the wasm bytes of `guests/wat/echo.wat` (compiled once)."""
    return load_wat


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (`redis://127.0.0.1:<port>/0`) of a real redis-server run for this test session.

    Fails, rather than skips, when redis-server is missing: CI installs it (scripts/test).
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(run_redis_server(tmp_path_factory.mktemp("redis")))
        except RedisServerError as exc:
            message = str(exc)
        else:
            yield url
            return
    pytest.fail(message, pytrace=False)
