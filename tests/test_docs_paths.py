"""Docs that cannot drift: every repository path a doc, docstring or comment names exists.

README.md, docs/ and the project's source, scripts and test guests are read as text; every
token that looks like a path inside the repository (``assemblexd/...``, ``docs/...``,
``tests/...::test_name`` and the like) must name a file or folder that is there, and a
``::name`` must be defined in that file. Placeholders (``<name>``, ``*``) are skipped. The
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


def test_every_path_named_exists() -> None:
    missing = []
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
                missing.append(f"{name}: {cited}")
            elif symbol and target.is_file():
                source = target.read_text(errors="replace")
                if not re.search(rf"\b(def|class)\s+{symbol}\b|^{symbol}\s*=", source, re.M):
                    missing.append(f"{name}: {cited}::{symbol}")
    assert missing == [], "\n".join(missing)
