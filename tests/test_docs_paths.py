"""Docs that cannot drift: every repository path a doc, docstring or comment names exists.

README.md, docs/ and the project's source, scripts and test guests are read as text; every
token that looks like a path inside the repository (``assemblexd/...``, ``docs/...``,
``tests/...::test_name`` and the like) must name a file or folder that is there, and a
``::name`` must be defined in that file. Placeholders (``<name>``, ``*``) are skipped, and so
are paths git ignores (build outputs such as ``guests/build/``, made by the scripts). The
project cites nothing outside it, so naming the first design sketch (which lives outside the
repository) is an error too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ("assemblexd", "crdt", "membership", "guests", "tests", "scripts", "docs", "benchmarks",
       "examples", ".ci")  # fmt: skip
PATH = re.compile(
    r"(?<![\w./-])((?:" + "|".join(re.escape(t) for t in TOP) + r")/[A-Za-z0-9_./-]*[A-Za-z0-9_])"
    r"(?:::([A-Za-z_][A-Za-z0-9_]*))?"
)
READ = (".md", ".py", ".wat", ".toml", ".sh")
OUTSIDE = "DESIGN" + ".md"  # spelled apart, so that this file does not name it


def _files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [
        f for f in listed
        if f.endswith(READ) or (f.startswith("scripts/") and "." not in Path(f).name)
    ]  # fmt: skip


def _ignored(paths: set[str]) -> set[str]:
    """Those of ``paths`` that git ignores (generated, so absent from a fresh clone)."""
    asked = sorted(paths | {p + "/" for p in paths})  # a folder's pattern ends with "/"
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT, input="\n".join(asked), capture_output=True, text=True, check=False,
    )  # fmt: skip
    return {p.rstrip("/") for p in done.stdout.split()}


def test_every_path_named_exists() -> None:
    missing: list[str] = []
    absent: dict[str, list[str]] = {}
    for name in _files():
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if OUTSIDE in text:
            missing.append(f"{name}: cites {OUTSIDE}, which is not in the repository")
        for match in PATH.finditer(text):
            cited, symbol = match.group(1).rstrip("."), match.group(2)
            target = ROOT / cited
            if not target.exists():
                absent.setdefault(cited, []).append(name)
            elif symbol and target.is_file():
                source = target.read_text(errors="replace")
                if not re.search(rf"\b(def|class)\s+{symbol}\b|^{symbol}\s*=", source, re.M):
                    missing.append(f"{name}: {cited}::{symbol}")
    generated = _ignored(set(absent))
    missing += [f"{n}: {p}" for p, names in absent.items() if p not in generated for n in names]
    assert missing == [], "\n".join(missing)
