"""The packages' layering, read from their import statements (``ast``, nothing imported).

* ``crdt`` and ``membership`` are libraries: neither imports ``assemblexd`` or the other.
* ``assemblexd.runtime`` imports nothing of the project outside itself: not the rest of the
  daemon, not the libraries (what it needs comes in as arguments, see its ``__init__``).

Every import statement counts, wherever it is (inside functions, under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RULES: dict[str, tuple[str, ...]] = {
    # package: the packages it must not import (a name or any of its submodules)
    "crdt": ("assemblexd", "membership"),
    "membership": ("assemblexd", "crdt"),
    "assemblexd.runtime": ("crdt", "membership", "assemblexd"),
}
ALLOWED: dict[str, tuple[str, ...]] = {
    # exceptions to the package's rule: itself
    "assemblexd.runtime": ("assemblexd.runtime",),
}


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of everything the source of ``module`` imports.

    Relative imports are resolved against ``module``'s package; ``from X import a`` yields
    ``X`` and ``X.a`` (``a`` may be a submodule).
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.level - 1 > len(package):
                    raise ValueError(f"{module}: import beyond the top package")
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``module`` (its ``source``) that break its package's rule."""
    rule = next((p for p in sorted(RULES, key=len, reverse=True) if _within(module, p)), None)
    if rule is None:
        return []
    bad = []
    for line, name in imported_modules(source, module, is_package):
        if any(_within(name, allowed) for allowed in ALLOWED.get(rule, ())):
            continue
        if any(_within(name, forbidden) for forbidden in RULES[rule]):
            bad.append(f"{module}:{line} imports {name}")
    return bad


def _sources(package: str) -> list[tuple[Path, str, bool]]:
    top = ROOT / package.replace(".", "/")
    out = []
    for path in sorted(top.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out.append((path, ".".join(parts), is_package))
    return out


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_keep_to_its_layer(package: str) -> None:
    sources = _sources(package)
    assert sources, f"no sources found for {package}"
    bad = [
        v
        for path, module, is_package in sources
        for v in violations(path.read_text(), module, is_package)
    ]
    assert not bad, "layering broken:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "module", "is_package"),
    [
        ("from ..node import Node", "assemblexd.runtime.pool", False),
        ("from .. import config", "assemblexd.runtime.pool", False),
        ("from . import node", "assemblexd", True),  # allowed: not in a ruled package
        ("import assemblexd.errors", "assemblexd.runtime._wasm", False),
        ("from assemblexd import node", "assemblexd.runtime", True),
        ("def f():\n    import membership\n", "crdt._replica", False),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import crdt\n",
            "membership._node",
            False,
        ),
        ("import crdt", "assemblexd.runtime.hostfuncs", False),
    ],
)
def test_the_checker_sees_forbidden_imports(source: str, module: str, is_package: bool) -> None:
    """The check itself: each of these is caught (but the one outside the ruled packages)."""
    found = violations(source, module, is_package)
    if module == "assemblexd":
        assert found == []
    else:
        assert found, source


@pytest.mark.parametrize(
    ("source", "module", "is_package"),
    [
        ("from .errors import HostError", "assemblexd.runtime.pool", False),
        ("from . import _wasm", "assemblexd.runtime", True),
        ("from ._wasm import Engine", "assemblexd.runtime", True),
        ("import wasmtime\nfrom wasmtime import _ffi", "assemblexd.runtime._capi", False),
        ("from ._state import State", "crdt._replica", False),
    ],
)
def test_the_checker_lets_a_package_import_itself(
    source: str, module: str, is_package: bool
) -> None:
    assert violations(source, module, is_package) == []
