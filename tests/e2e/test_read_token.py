"""``--read-token`` on a real daemon, read through the CLI (``assemblexd status`` and ``apps``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster import Daemon, http
from helpers import run_cli as cli

pytestmark = pytest.mark.e2e

READ = "r3ad-token"


def test_status_and_apps_with_the_read_token(tmp_path: Path) -> None:
    daemon = Daemon(
        "reader", tmp_path / "data", tmp_path / "reader.log", args=["--read-token", READ]
    )
    daemon.start()
    try:
        daemon.wait_listening()
        url = daemon.url
        for command in (["status"], ["apps"]):
            refused = cli(*command, "--url", url)
            assert refused.returncode == 1
            assert "read token" in refused.stderr
            done = cli(*command, "--url", url, "--read-token", READ)
            assert done.returncode == 0, done.stderr
            by_env = cli(*command, "--url", url, env={"ASSEMBLEX_READ_TOKEN": READ})
            assert by_env.returncode == 0, by_env.stderr
        shown = cli("status", "--url", url, "--read-token", READ).stdout
        assert url in shown  # the operator sees the node's URL
        assert http("GET", f"{url}/status")[0] == 401
        assert http("GET", f"{url}/healthz")[0] == 200
        assert daemon.stop() == 0
    finally:
        daemon.kill()
