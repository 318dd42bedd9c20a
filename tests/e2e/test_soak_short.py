"""A short run of ``scripts/soak``: mixed calls on 3 nodes, redeploys, one restart; no error.

The script is run as an operator runs it (a subprocess, its JSON report read back). At this
length the memory figures say little (the first and last windows are a third of the run
each): they are printed, not asserted. The default-length figures are in docs/operations.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

pytestmark = pytest.mark.e2e

SECONDS = 35
LIMIT = 240.0
"""Wall-clock bound on the whole script: start, the run, the final checks, the stop."""


@pytest.mark.timeout(LIMIT + 30)
def test_soak_short(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "soak"), "--seconds", str(SECONDS)]
    argv += ["--redeploy-every", "5", "--rate", "60", "--json", str(report_path)]
    argv += ["--keep", str(tmp_path / "cluster")]
    done = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    print(done.stdout[-4000:])
    assert report_path.exists(), done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["errors"] == 0, report["error_samples"]
    assert done.returncode == 0, done.stderr[-4000:]
    assert report["calls_total"] > SECONDS * 20, report["calls"]
    assert report["redeploys"] >= 4, report
    assert report["restart"], "the node restart did not happen"
    assert set(report["ok"]) == {"echo", "soak", "kv"}, report["ok"]
    print("memory:", json.dumps(report["memory"], indent=1))
