"""The examples in the libraries' docstrings run as written."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import crdt
import crdt.testing

MODULES = [crdt, crdt.testing]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
