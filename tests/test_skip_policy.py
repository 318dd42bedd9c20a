"""The skip policy of tests/conftest.py: a skipped test marked ``required`` fails the run and
says so in the summary, unless ``$ASSEMBLEX_ALLOW_SKIP`` names its group."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text("utf-8")

TESTS = """
import pytest

@pytest.mark.required("netns")
def test_needs_a_namespace():
    pytest.skip("creating network namespaces needs root")

def test_optional():
    pytest.skip("nothing rests on this one")

def test_runs():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("ASSEMBLEX_ALLOW_SKIP", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "markers =\n    required(group): a README claim rests on it\n"
    )
    pytester.makepyfile(test_policy=TESTS)
    return pytester


def test_a_required_test_that_skips_fails_the_run(suite: pytest.Pytester) -> None:
    result = suite.runpytest()
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*skipped tests that README claims rest on*",
            "FAILS THE RUN [[]netns[]] test_policy.py::test_needs_a_namespace: *needs root",
            "*ASSEMBLEX_ALLOW_SKIP=netns*",
        ]
    )
    assert "test_optional" not in result.stdout.str().split("claims rest on")[-1]


@pytest.mark.parametrize("allow", ["netns", "other,netns", "all"])
def test_the_user_can_accept_the_skip(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, allow: str
) -> None:
    monkeypatch.setenv("ASSEMBLEX_ALLOW_SKIP", allow)
    result = suite.runpytest()
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["allowed [[]netns[]] test_policy.py::test_needs_a_namespace: *"])


def test_another_group_does_not_accept_it(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSEMBLEX_ALLOW_SKIP", "redis")
    assert suite.runpytest().ret == pytest.ExitCode.TESTS_FAILED


def test_a_failure_stays_a_failure(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_fail="def test_fails():\n    assert False\n")
    assert suite.runpytest().ret == pytest.ExitCode.TESTS_FAILED
