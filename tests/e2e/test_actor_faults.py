"""``scripts/actor-faults`` for 40 s: random kill -9, restarts and partitions under actor and kv
load, and no violation in the history; and the history checker itself finds what it must.

The script is run as an operator runs it (a subprocess, its JSON summary read back). As root
it runs the daemons in network namespaces and partitions them; otherwise on 127.0.0.1 with
kills and restarts only. The seed is fixed, so the faults are the same sequence every run
(with seed 1 and 40 s: partitions, kills and restarts all happen).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from actor_history import Op, check_actors, check_kv
from helpers import REPO_ROOT

SECONDS = 40
LIMIT = 360.0
"""Wall-clock bound on the whole script: 5 starts, the run, convergence (at most 120 s), the
stop."""


def _netns() -> bool:
    return sys.platform == "linux" and os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.mark.e2e
@pytest.mark.required("netns")
@pytest.mark.timeout(LIMIT + 30)
def test_actor_faults_40s(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "actor-faults")]
    argv += ["--duration", str(SECONDS), "--seed", "1", "--json", str(report_path)]
    argv += ["--keep", str(tmp_path / "run")]
    done = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    print(done.stdout[-6000:])
    assert report_path.exists(), done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["violations"] == [], report["violations"][:30]
    assert done.returncode == 0, done.stderr[-4000:]
    assert report["mode"] == ("netns" if _netns() else "local")
    assert report["converged_after_s"] is not None
    faults = report["faults"]
    assert faults.get("kill", 0) >= 2, faults
    assert faults.get("restart", 0) >= 2, faults
    if report["mode"] == "netns":
        assert faults.get("partition", 0) >= 1, faults
    acked = report["acknowledged"]
    assert acked.get("actor", 0) > SECONDS * 10, acked
    assert acked.get("kv_incr", 0) > 0, acked
    assert acked.get("kv_set", 0) > 0, acked
    final = report["final"]["actors"]
    assert sum(a["count"] for a in final.values()) >= acked["actor"], final


def _inc(key: str, start: float, end: float, stored: int, gen: int, owner: str = "n0") -> Op:
    return Op(
        "actor", key, owner, start, end, 200, stored=stored, memory=stored, owner=owner, gen=gen
    )


def test_checker_passes_a_clean_history_and_finds_each_violation() -> None:
    clean = {"a": [_inc("a", 0, 1, 1, 1), _inc("a", 2, 3, 2, 1), _inc("a", 4, 5, 3, 2, "n1")]}
    clean["a"][2].memory = 1  # a new instance for the new generation
    assert check_actors(clean, {"a": 3}) == []

    twice = {"a": [_inc("a", 0, 1, 1, 1), _inc("a", 0.5, 1.5, 1, 1)]}
    assert any("seen twice" in p for p in check_actors(twice, {"a": 1}))
    lost = {"a": [_inc("a", 0, 1, 1, 1), _inc("a", 2, 3, 2, 1)]}
    assert any("lost" in p for p in check_actors(lost, {"a": 1}))
    back = {"a": [_inc("a", 0, 1, 1, 2), _inc("a", 2, 3, 2, 1)]}
    problems = check_actors(back, {"a": 2})
    assert any("older generation" in p for p in problems), problems
    two_owners = {"a": [_inc("a", 0, 1, 1, 1, "n0"), _inc("a", 2, 3, 2, 1, "n1")]}
    assert any("answered by" in p for p in check_actors(two_owners, {"a": 2}))
    restarted = {"a": [_inc("a", 0, 1, 1, 1), _inc("a", 2, 3, 2, 1)]}
    restarted["a"][1].memory = 1
    assert any("more than one instance" in p for p in check_actors(restarted, {"a": 2}))
    assert check_actors(restarted, {"a": 2}, instances=False) == []
    stale = {"a": [_inc("a", 0, 1, 5, 1), _inc("a", 2, 3, 4, 1)]}
    assert any("then a call sent" in p for p in check_actors(stale, {"a": 5}))

    sets = {
        "r": [
            Op("kv_set", "r", "n0", 0, 1, 200, value="x"),
            Op("kv_set", "r", "n1", 2, 3, 200, value="y"),
        ]
    }
    assert check_kv({}, sets, {"r": ["y", "y"]}) == []
    assert any("lost" in p for p in check_kv({}, sets, {"r": ["x", "x"]}))
    assert any("different" in p for p in check_kv({}, sets, {"r": ["x", "y"]}))
    incrs = {"c": [Op("kv_incr", "c", "n0", 0, 1, 200, value="1")] * 3}
    assert check_kv(incrs, {}, {"c": ["3"]}) == []
    assert any("lost" in p for p in check_kv(incrs, {}, {"c": ["2"]}))
