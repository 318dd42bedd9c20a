"""The command line: argv lists to Config, help texts, usage errors, client commands' output."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from assemblexd import __main__ as cli
from assemblexd import config as cli_config
from assemblexd import render
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
        "--advertise", "http://10.0.0.1:4100",
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
        "--idle-timeout", "0",
        "--max-kv", "4",
        "--max-kv-keys", "100",
        "--guest-log-rate", "5",
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
        advertise="http://10.0.0.1:4100",
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
        idle_timeout=0.0,
        max_kv_mib=4,
        max_kv_keys=100,
        guest_log_rate=5,
        call_timeout=2.5,
        call_wall_timeout=30.0,
        max_memory_mib=128,
        max_upload_mib=8,
        max_payload_mib=2,
        log_format="json",
    )


def test_read_token_and_slow_client_flags() -> None:
    config = run_config(
        "--read-token", "r", "--header-timeout", "2.5", "--body-timeout", "0",
        "--max-client-conns", "3",
    )  # fmt: skip
    assert (config.read_token, config.header_timeout, config.body_timeout) == ("r", 2.5, 0.0)
    assert config.max_client_conns == 3
    for command in ("status", "apps"):
        assert build_parser({}).parse_args([command, "--read-token", "t"]).read_token == "t"
        env = {"ASSEMBLEX_READ_TOKEN": "e"}
        assert build_parser(env).parse_args([command]).read_token == "e"


def test_the_url_peers_are_told() -> None:
    assert run_config("--port", "4100").url == "http://127.0.0.1:4100"
    assert run_config("--host", "::1", "--port", "4100").url == "http://[::1]:4100"
    advertised = run_config("--advertise", "http://node1.example:80/")
    assert advertised.url == "http://node1.example:80"
    # Every interface: this machine's primary address, not loopback, when it has one.
    everywhere = run_config("--host", "0.0.0.0", "--insecure", "--port", "4100")
    primary = cli_config.primary_address()
    assert everywhere.url == f"http://{primary or '127.0.0.1'}:4100"
    for bad in ("node1:4000", "ftp://node1:4000", "http://node1", "http://node1:4000/x"):
        with pytest.raises(ValueError, match="--advertise"):
            run_config("--advertise", bad)
    with pytest.raises(ValueError, match="https://HOST:PORT"):
        run_config("--advertise", "http://node1:4000", "--tls-cert", "c", "--tls-key", "k")


def test_accepted_cluster_keys() -> None:
    config = run_config(
        "--cluster-key", "new", "--accept-cluster-key", "old", "--accept-cluster-key", "older"
    )
    assert (config.cluster_key, config.accepted_cluster_keys) == ("new", ("old", "older"))
    with pytest.raises(ValueError, match="--accept-cluster-key needs --cluster-key"):
        run_config("--accept-cluster-key", "old")


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
        "--max-payload", "--log-format", "--tls-cert", "--tls-key", "--tls-ca",
        "--idle-timeout", "--max-kv", "--max-kv-keys", "--guest-log-rate",
        "--read-token", "--header-timeout", "--body-timeout", "--max-client-conns",
    ):  # fmt: skip
        assert flag in out
    assert "$PORT" in out
    assert "--call-token" in out
    assert "not yet active" not in out  # every flag of the CLI works now


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


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trustme CA and two certificates for 127.0.0.1 as PEM files: ca, cert, key, other_key,
    and encrypted_key (the key of cert under a passphrase)."""
    from cryptography.hazmat.primitives import serialization

    root = tmp_path_factory.mktemp("pem")
    ca = trustme.CA()
    leaf, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    files = {name: root / f"{name}.pem" for name in ("ca", "cert", "key", "other_key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    files["encrypted_key"] = root / "encrypted_key.pem"
    files["encrypted_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return files


def test_run_tls_flags(pem: dict[str, Path]) -> None:
    config = run_config(
        "--tls-cert", str(pem["cert"]),
        "--tls-key", str(pem["key"]),
        "--tls-ca", str(pem["ca"]),
        "--join", "https://10.0.0.2:4000",
        "--port", "4100",
    )  # fmt: skip
    assert (config.tls_cert, config.tls_key, config.tls_ca) == (pem["cert"], pem["key"], pem["ca"])
    assert config.tls
    assert config.url == "https://127.0.0.1:4100"
    assert run_config("--port", "4100").url == "http://127.0.0.1:4100"
    assert not run_config().tls

    tls = cli.load_tls(config)
    assert tls is not None
    assert tls.server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert tls.client.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert tls.client.check_hostname
    assert tls.client.verify_mode == ssl.CERT_REQUIRED
    assert cli.load_tls(run_config()) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert", "c.pem"], "--tls-cert needs --tls-key"),
        (["--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
        (["--tls-ca", "ca.pem"], "--tls-ca is for a node that serves TLS"),
        (["--join", "https://10.0.0.2:4000"], "needs --tls-cert and --tls-key"),
        (["--join", "wss://10.0.0.2:4000/peer"], "needs --tls-cert and --tls-key"),
        (
            ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--join", "http://10.0.0.2:4000"],
            "joins through https://",
        ),
        (
            ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--join", "10.0.0.2:4000"],
            "joins through https://",
        ),
    ],
)
def test_tls_flags_that_do_not_go_together(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        run_config(*argv)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (("missing", "key", None), "--tls-cert {missing}: No such file or directory"),
        (("cert", "dir", None), "--tls-key {dir}: Is a directory"),
        (("cert", "other_key", None), "--tls-key {other_key} is not the key of --tls-cert {cert}"),
        (("key", "key", None), "--tls-cert {key} holds no PEM certificate"),
        (("cert", "cert", None), "--tls-key {cert} holds no PEM private key"),
        (("cert", "encrypted_key", None), "--tls-key {encrypted_key} is encrypted"),
        (("cert", "key", "missing"), "--tls-ca {missing}: No such file or directory"),
        (("cert", "key", "key"), "--tls-ca {key} holds no PEM certificate"),
    ],
)
def test_run_refuses_tls_files_it_cannot_use(
    files: tuple[str, str, str | None],
    message: str,
    pem: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = {**pem, "missing": tmp_path / "missing.pem", "dir": tmp_path}
    cert, key, ca = files
    argv = ["run", "--data-dir", str(tmp_path / "data"), "--no-mdns"]
    argv += ["--tls-cert", str(paths[cert]), "--tls-key", str(paths[key])]
    if ca is not None:
        argv += ["--tls-ca", str(paths[ca])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("assemblexd run: error: ")
    assert message.format(**paths) in err
    assert not (tmp_path / "data").exists()


def test_client_url_defaults() -> None:
    for command in (["deploy", "f.wasm"], ["call", "app"], ["apps"], ["status"]):
        assert build_parser({}).parse_args(command).url == "http://127.0.0.1:4000"
        env = {"ASSEMBLEX_URL": "http://10.1.2.3:4001"}
        assert build_parser(env).parse_args(command).url == "http://10.1.2.3:4001"
        assert build_parser(env).parse_args([*command, "--url", "http://x:1"]).url == "http://x:1"


def test_client_tls_ca() -> None:
    for command in (["deploy", "f.wasm"], ["call", "app"], ["apps"], ["status"]):
        assert build_parser({}).parse_args(command).tls_ca is None
        env = {"ASSEMBLEX_TLS_CA": "/etc/assemblex/ca.pem"}
        assert build_parser(env).parse_args(command).tls_ca == Path("/etc/assemblex/ca.pem")
        argv = [*command, "--tls-ca", "my-ca.pem"]
        assert build_parser(env).parse_args(argv).tls_ca == Path("my-ca.pem")


def test_client_command_with_a_ca_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "ca.pem"
    assert main(["apps", "--url", "https://127.0.0.1:9", "--tls-ca", str(missing)]) == 1
    assert f"assemblexd apps: error: --tls-ca {missing}: No such file" in capsys.readouterr().err


def test_call_args() -> None:
    ns = build_parser({}).parse_args(["call", "echo"])
    assert (ns.app, ns.op, ns.data, ns.data_file) == ("echo", "main", None, None)
    ns = build_parser({}).parse_args(["call", "echo", "echo", "--data", "hi"])
    assert (ns.app, ns.op, ns.data) == ("echo", "echo", "hi")


def test_actor_args() -> None:
    ns = build_parser({}).parse_args(["actor", "counter", "k1"])
    assert (ns.app, ns.key, ns.op, ns.data, ns.data_file, ns.json) == (
        "counter", "k1", None, None, None, False
    )  # fmt: skip
    ns = build_parser({"ASSEMBLEX_CALL_TOKEN": "t"}).parse_args(
        ["actor", "counter", "k1", "set_alarm", "--data", "500"]
    )
    assert (ns.op, ns.data, ns.token) == ("set_alarm", "500", "t")


@pytest.mark.parametrize(
    "argv",
    [["actor"], ["actor", "app"], ["actor", "app", "k", "op", "--data", "x", "--data-file", "f"]],
)
def test_bad_actor_args(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_actor_data_without_an_op(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["actor", "app", "k", "--data", "x", "--url", "http://127.0.0.1:9"]) == 1
    assert "assemblexd actor: error: --data and --data-file go with an OP" in (
        capsys.readouterr().err
    )


def test_format_actor() -> None:
    now = 1_800_000_000.0
    info = render.ActorInfo.from_json(
        {"owner": "n2", "generation": 7, "active": True, "alarm_at": int((now + 90) * 1000)}
    )
    lines = render.format_actor("counter", "k1", info, now=now).splitlines()
    assert lines[:4] == [
        "actor       counter/k1",
        "owner       n2",
        "generation  7",
        "active      yes",
    ]
    assert lines[4].startswith("alarm       ")
    assert lines[4].endswith("(in 1m 30s)")
    idle = render.ActorInfo.from_json({"owner": "n1", "generation": 0, "active": False})
    text = render.format_actor("counter", "k2", idle, now=now)
    assert "active      no (passivated, or never called)" in text
    assert "alarm       none" in text
    assert "owner       (none: no node runs the app)" in render.format_actor(
        "gone", "k", render.ActorInfo.from_json({"owner": None}), now=now
    )


def test_format_status_counts_each_members_actors() -> None:
    text = format_status(
        {
            "node": {"id": "a", "name": "n0"},
            "members": [
                {"id": "a", "name": "n0", "active": ["b"], "alive": True, "actors": 3},
                {"id": "b", "name": "n1", "active": ["a"], "alive": True, "actors": 1},
                {"id": "c", "name": "n2", "active": [], "alive": False},
            ],
        }
    )
    rows = [line.split() for line in text.splitlines() if "->" in line]
    assert rows == [
        ["*", "n0", "-", "alive", "3", "actors", "->", "n1"],
        ["n1", "-", "alive", "1", "actor", "->", "n0"],
        ["n2", "-", "gone", "->", "(no", "neighbours)"],
    ]


def test_client_command_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    assert main(["apps", "--url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:9" in err


def test_deploy_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", str(tmp_path / "nope.wasm"), "--url", "http://127.0.0.1:9"]) == 1
    assert "nope.wasm" in capsys.readouterr().err


def format_status(data: dict[str, Any]) -> str:
    """The terminal status of ``data``, a /status answer."""
    return render.format_status(render.Status.from_json(data))


def test_format_apps() -> None:
    apps: list[dict[str, Any]] = [
        {"name": "echo", "version": 3, "size": 120, "sha256": "ab" * 32, "capabilities": ["host"]},
    ]
    text = render.format_apps([render.AppRow.from_json(a) for a in apps])
    assert text.splitlines()[0].split() == ["NAME", "VERSION", "SIZE", "SHA256", "CAPABILITIES"]
    assert text.splitlines()[1].split() == ["echo", "3", "120", "ab" * 6, "host"]
    assert render.format_apps([]) == "no apps deployed"


def test_format_status() -> None:
    text = format_status(
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
    assert format_status({}).splitlines()[0] == "node       ?"


def test_format_status_draws_the_membership_graph() -> None:
    ids = {"n0": "a" * 16, "n1": "b" * 16, "n2": "c" * 16}
    text = format_status(
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
    text = format_status(
        {"node": {"id": "x"}, "members": [{"id": "x", "name": "solo", "active": []}]}
    )
    assert text.splitlines()[-2].split() == ["*", "solo", "-", "?", "->", "(no", "neighbours)"]
