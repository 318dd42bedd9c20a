"""The project's own checks: ruff (lint and format) over the tree, mypy (strict) over the three
packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_without_an_ending_are_linted() -> None:
    """Every script of ``scripts/`` written in Python but named without ``.py`` is in
    ruff's ``extend-include``, so that ``ruff check .`` and ``ruff format .`` read it."""
    listed = run("ruff", "check", ".", "--show-files").stdout
    for script in sorted((ROOT / "scripts").iterdir()):
        if script.suffix or not script.is_file():
            continue
        if "python" in script.read_text(errors="replace").split("\n", 1)[0]:
            assert str(script) in listed, f"{script.name} is not linted: add it to extend-include"


@pytest.mark.timeout(300)
def test_mypy() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
