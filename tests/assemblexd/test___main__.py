"""The command line: argv lists to Config, help texts, usage errors, client commands' output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assemblexd import __main__ as cli
from assemblexd.__main__ import build_parser, config_from_args, main
from assemblexd.config import Config


def run_config(*argv: str, environ: dict[str, str] | None = None) -> Config:
    env = {} if environ is None else environ
    ns = build_parser(env).parse_args(["run", *argv])
    return config_from_args(ns, env)


def test_run_defaults_match_config_defaults() -> None:
    assert run_config() == Config()


def test_run_all_flags() -> None:
    config = run_config(
        "--host", "0.0.0.0",
        "--port", "4100",
        "--name", "n1",
        "--data-dir", "/var/lib/assemblex",
        "--join", "http://10.0.0.2:4000",
        "--join", "http://10.0.0.3:4000",
        "--no-mdns",
        "--cluster-key", "k",
        "--insecure",
        "--token", "t",
        "--redis-url", "redis://127.0.0.1:6379/0",
        "--redis-url", "cache=redis://10.0.0.9:6379/1",
        "--pool-size", "0",
        "--max-instances", "50",
        "--call-timeout", "2.5",
        "--call-wall-timeout", "30",
        "--max-memory", "128",
        "--max-upload", "8",
        "--max-payload", "2",
        "--log-format", "json",
    )  # fmt: skip
    assert config == Config(
        host="0.0.0.0",
        port=4100,
        name="n1",
        data_dir=Path("/var/lib/assemblex"),
        join=("http://10.0.0.2:4000", "http://10.0.0.3:4000"),
        mdns=False,
        cluster_key="k",
        insecure=True,
        token="t",
        redis_urls=(("", "redis://127.0.0.1:6379/0"), ("cache", "redis://10.0.0.9:6379/1")),
        pool_size=0,
        max_instances=50,
        call_timeout=2.5,
        call_wall_timeout=30.0,
        max_memory_mib=128,
        max_upload_mib=8,
        max_payload_mib=2,
        log_format="json",
    )


def test_port_from_env() -> None:
    assert run_config(environ={"PORT": "5005"}).port == 5005
    assert run_config("--port", "6006", environ={"PORT": "5005"}).port == 6006
    assert run_config(environ={"PORT": ""}).port == 4000
    with pytest.raises(ValueError, match="PORT"):
        run_config(environ={"PORT": "http"})


def test_port_env_through_main(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "70000")
    assert main(["run"]) == 2


def test_redis_url_with_equals_in_query_is_the_default_binding() -> None:
    config = run_config("--redis-url", "redis://h:6379/0?client_name=x")
    assert config.redis_urls == (("", "redis://h:6379/0?client_name=x"),)


def test_redis_url_duplicate_binding() -> None:
    with pytest.raises(ValueError, match="twice"):
        run_config("--redis-url", "a=redis://x", "--redis-url", "a=redis://y")
    with pytest.raises(ValueError, match="default"):
        run_config("--redis-url", "redis://x", "--redis-url", "redis://y")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--port", "http"],
        ["run", "--port", "65536"],
        ["run", "--port", "-1"],
        ["run", "--pool-size", "-1"],
        ["run", "--max-instances", "0"],
        ["run", "--call-timeout", "0"],
        ["run", "--call-timeout", "nan"],
        ["run", "--call-wall-timeout", "-3"],
        ["run", "--max-upload", "0"],
        ["run", "--max-payload", "x"],
        ["run", "--max-memory", "1.5"],
        ["run", "--log-format", "xml"],
        ["run", "--redis-url", "not-a-url"],
        ["run", "--bogus"],
        ["deploy"],
        ["call"],
        ["call", "app", "--data", "x", "--data-file", "f"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_args(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["run"], ["deploy"], ["call"], ["apps"], ["status"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: assemblexd")


def test_run_help_mentions_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--host", "--port", "--name", "--data-dir", "--join", "--no-mdns", "--cluster-key",
        "--insecure", "--token", "--redis-url", "--pool-size", "--max-instances",
        "--call-timeout", "--call-wall-timeout", "--max-memory", "--max-upload",
        "--max-payload", "--log-format",
    ):  # fmt: skip
        assert flag in out
    assert "$PORT" in out
    assert "--call-token" in out
    assert "not yet active" not in out  # every flag of DESIGN.md's CLI works now


def test_listening_beyond_loopback_needs_a_key_or_insecure() -> None:
    from assemblexd.__main__ import build_parser, config_from_args

    def config(*argv: str) -> object:
        return config_from_args(build_parser().parse_args(["run", *argv]), {})

    with pytest.raises(ValueError, match="--cluster-key"):
        config("--host", "0.0.0.0")
    assert config("--host", "0.0.0.0", "--insecure")
    assert config("--host", "10.1.2.3", "--cluster-key", "k")
    assert config("--host", "127.0.0.2")
    assert config("--host", "localhost")
    assert main(["run", "--host", "0.0.0.0", "--data-dir", "/nonexistent/x"]) == 2


def test_client_url_defaults() -> None:
    for command in (["deploy", "f.wasm"], ["call", "app"], ["apps"], ["status"]):
        assert build_parser({}).parse_args(command).url == "http://127.0.0.1:4000"
        env = {"ASSEMBLEX_URL": "http://10.1.2.3:4001"}
        assert build_parser(env).parse_args(command).url == "http://10.1.2.3:4001"
        assert build_parser(env).parse_args([*command, "--url", "http://x:1"]).url == "http://x:1"


def test_call_args() -> None:
    ns = build_parser({}).parse_args(["call", "echo"])
    assert (ns.app, ns.op, ns.data, ns.data_file) == ("echo", "main", None, None)
    ns = build_parser({}).parse_args(["call", "echo", "echo", "--data", "hi"])
    assert (ns.app, ns.op, ns.data) == ("echo", "echo", "hi")


def test_client_command_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    assert main(["apps", "--url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:9" in err


def test_deploy_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", str(tmp_path / "nope.wasm"), "--url", "http://127.0.0.1:9"]) == 1
    assert "nope.wasm" in capsys.readouterr().err


def test_format_apps() -> None:
    apps: list[dict[str, Any]] = [
        {"name": "echo", "version": 3, "size": 120, "sha256": "ab" * 32, "capabilities": ["host"]},
    ]
    text = cli._format_apps(apps)
    assert text.splitlines()[0].split() == ["NAME", "VERSION", "SIZE", "SHA256", "CAPABILITIES"]
    assert text.splitlines()[1].split() == ["echo", "3", "120", "ab" * 6, "host"]
    assert cli._format_apps([]) == "no apps deployed"


def test_format_status() -> None:
    text = cli._format_status(
        {
            "node": {"id": "abc", "name": "n1", "url": "http://127.0.0.1:4000"},
            "active": [],
            "passive": [],
            "members": [{"id": "abc", "name": "n1"}],
            "apps": [
                {
                    "name": "echo",
                    "version": 2,
                    "versions": {"n1": 2, "n2": 1},
                    "pool": {"idle": 3, "busy": 1},
                }
            ],
            "instances": {"live": 4, "limit": 1024},
            "uptime": 3725.5,
        }
    )
    assert "node       n1" in text
    assert "http://127.0.0.1:4000" in text
    assert "members    1: n1" in text
    assert "uptime     1h 2m 5s" in text
    assert "instances  4 live of 1024" in text
    assert "echo v2 (behind: n2 v1), pool 3 idle / 1 busy" in text


def test_format_status_tolerates_missing_fields() -> None:
    assert cli._format_status({}).splitlines()[0] == "node       ?"


def test_format_status_draws_the_membership_graph() -> None:
    ids = {"n0": "a" * 16, "n1": "b" * 16, "n2": "c" * 16}
    text = cli._format_status(
        {
            "node": {"id": ids["n0"], "name": "n0", "url": "http://127.0.0.1:4000"},
            "active": [{"id": ids["n1"], "address": "ws://127.0.0.1:4001/peer"}],
            "passive": [{"id": "f" * 16, "address": "ws://127.0.0.1:4009/peer"}],
            "members": [
                {
                    "id": ids["n0"],
                    "name": "n0",
                    "url": "http://127.0.0.1:4000",
                    "active": [ids["n1"]],
                    "apps": {"echo": 2},
                    "alive": True,
                },
                {
                    "id": ids["n1"],
                    "name": "n1",
                    "url": "http://127.0.0.1:4001",
                    "active": [ids["n0"], ids["n2"]],
                    "apps": {"echo": 1},
                    "alive": True,
                },
                {
                    "id": ids["n2"],
                    "name": "n2",
                    "url": "http://127.0.0.1:4002",
                    "active": [ids["n1"], "d" * 16],
                    "apps": {},
                    "alive": False,
                },
            ],
            "apps": [{"name": "echo", "version": 2, "versions": {"n0": 2, "n1": 1}}],
        }
    )
    lines = text.splitlines()
    # Views by member name; a peer with no member record yet by its id, shortened.
    assert "active     1: n1" in lines
    assert "passive    1: " + "f" * 12 in lines
    assert "members    3: n0, n1, n2" in lines
    # The graph: this node starred, URL, alive flag, active-view neighbours by name (sorted).
    graph = [line.split() for line in lines if "http://127.0.0.1:400" in line][1:]
    assert graph == [
        ["*", "n0", "http://127.0.0.1:4000", "alive", "->", "n1"],
        ["n1", "http://127.0.0.1:4001", "alive", "->", "n0,", "n2"],
        ["n2", "http://127.0.0.1:4002", "gone", "->", "d" * 12 + ",", "n1"],
    ]
    # Each app with the version each node runs ("-": not running it).
    assert "  echo v2 (behind: n1 v1)" in lines
    assert "    on nodes: n0 v2, n1 v1, n2 -" in lines


def test_format_status_member_without_neighbours() -> None:
    text = cli._format_status(
        {"node": {"id": "x"}, "members": [{"id": "x", "name": "solo", "active": []}]}
    )
    assert text.splitlines()[-2].split() == ["*", "solo", "-", "?", "->", "(no", "neighbours)"]
