"""Config as the one source of each setting: its checks, its flags' metadata, the config file."""

from __future__ import annotations

import dataclasses
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from assemblexd import config as config_module
from assemblexd.__main__ import build_parser, config_from_args, main
from assemblexd.config import Config, ConfigError, flags


def run_config(*argv: str, environ: dict[str, str] | None = None) -> Config:
    env = {} if environ is None else environ
    return config_from_args(build_parser(env).parse_args(["run", *argv]), env)


# -- checks of a Config built in code -------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 70000}, "--port: port out of range 0-65535: 70000"),
        ({"pool_size": -1}, "--pool-size: must be at least 0: -1"),
        ({"max_instances": 0}, "--max-instances: must be at least 1: 0"),
        ({"call_timeout": 0}, "--call-timeout: must be a positive number of seconds: 0"),
        ({"call_wall_timeout": float("nan")}, "--call-wall-timeout: must be a positive"),
        ({"idle_timeout": -1.0}, "--idle-timeout: must be 0 or a positive number of seconds"),
        ({"max_memory_mib": 1.5}, "--max-memory: expected int, got 1.5"),
        ({"max_upload_mib": True}, "--max-upload: expected int, got True"),
        ({"log_format": "xml"}, "--log-format: invalid choice: 'xml'"),
        ({"data_dir": "data"}, "--data-dir: expected Path, got 'data'"),
        ({"join": ["http://a:1"]}, "--join: expected a tuple"),
        ({"max_call_depth": 0}, "max_call_depth must be an integer of at least 1: 0"),
        ({"epoch_tick_ms": 0}, "epoch_tick_ms must be a positive number: 0"),
        ({"host": "0.0.0.0"}, "listening on 0.0.0.0 reaches beyond this machine"),
        ({"accepted_cluster_keys": ("old",)}, "--accept-cluster-key needs --cluster-key"),
        ({"tls_cert": Path("c.pem")}, "--tls-cert needs --tls-key"),
        ({"tls_ca": Path("ca.pem")}, "--tls-ca is for a node that serves TLS"),
        ({"join": ("https://10.0.0.2:4000",)}, "needs --tls-cert and --tls-key"),
        ({"advertise": "node1:4000"}, "--advertise node1:4000: give http://HOST:PORT"),
        ({"redis_urls": (("", "redis://x"), ("", "redis://y"))}, "twice for the default"),
        ({"redis_urls": ("redis://x",)}, "--redis-url: expected tuple, got 'redis://x'"),
        ({"redis_urls": (("a", "not-a-url"),)}, "--redis-url: expected URL or NAME=URL"),
    ],
)
def test_a_config_built_in_code_is_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(**changes)
    # ... and so is one changed from a good one.
    with pytest.raises(ConfigError):
        dataclasses.replace(Config(), **changes)


def test_good_configs_built_in_code() -> None:
    assert Config(host="0.0.0.0", insecure=True, port=0, call_timeout=1, idle_timeout=0)
    assert Config(host="10.1.2.3", cluster_key="k", accepted_cluster_keys=("old",))
    assert Config(redis_urls=(("", "redis://x"), ("cache", "redis://y/1?client_name=a")))
    assert Config(advertise="http://node1.example:80/", join=("http://10.0.0.2:4000",))


def test_config_errors_are_value_errors() -> None:
    # Callers written against the ValueError the CLI raised before keep working.
    assert issubclass(ConfigError, ValueError)


# -- the URL a node is reached at ----------------------------------------------------------


def test_url_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("Config.url opened a socket")

    monkeypatch.setattr(socket, "socket", no_socket)
    everywhere = Config(host="0.0.0.0", insecure=True, port=4100)
    assert everywhere.url == "http://127.0.0.1:4100"
    assert Config(host="::", insecure=True, port=4100).url == "http://127.0.0.1:4100"


def test_the_primary_address_is_found_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []

    def primary() -> str:
        calls.append(None)
        return "192.0.2.7"

    monkeypatch.setattr(config_module, "primary_address", primary)
    everywhere = Config(host="0.0.0.0", insecure=True, port=4100).with_primary_address()
    assert everywhere.url == "http://192.0.2.7:4100"
    assert everywhere.with_primary_address() is everywhere  # found once
    assert dataclasses.replace(everywhere, port=4200).url == "http://192.0.2.7:4200"
    # Not needed, not looked up: a loopback host, or an --advertise URL.
    assert Config(port=4100).with_primary_address().url == "http://127.0.0.1:4100"
    advertised = Config(host="0.0.0.0", insecure=True, advertise="http://n1:4000")
    assert advertised.with_primary_address().url == "http://n1:4000"
    assert len(calls) == 1
    assert run_config("--host", "0.0.0.0", "--insecure").url == "http://192.0.2.7:4000"


# -- the parser is made from the fields' metadata ------------------------------------------


def test_every_flag_is_in_run_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for field, flag in flags():
        assert f"{flag.name} " in out or f"{flag.name}\n" in out, field.name
    assert "--config FILE" in out


def test_fields_without_a_flag_are_not_flags() -> None:
    flagged = {f.name for f, _ in flags()}
    assert {"cpu_workers", "epoch_tick_ms", "wildcard_address"}.isdisjoint(flagged)
    with pytest.raises(SystemExit):
        build_parser({}).parse_args(["run", "--cpu-workers", "2"])


# -- the config file -----------------------------------------------------------------------


# Each flag once, as typed and as its config-file key would say it.
SAMPLES: list[tuple[list[str], str]] = [
    (["--host", "10.0.0.5"], 'host = "10.0.0.5"'),
    (["--port", "4100"], "port = 4100"),
    (["--advertise", "http://10.0.0.5:4100"], 'advertise = "http://10.0.0.5:4100"'),
    (["--name", "n1"], 'name = "n1"'),
    (["--data-dir", "/var/lib/assemblex"], 'data-dir = "/var/lib/assemblex"'),
    (["--token", "t"], 'token = "t"'),
    (["--call-token", "c"], 'call-token = "c"'),
    (["--read-token", "r"], 'read-token = "r"'),
    (["--header-timeout", "2.5"], "header-timeout = 2.5"),
    (["--body-timeout", "0"], "body-timeout = 0"),
    (["--max-client-conns", "3"], "max-client-conns = 3"),
    (["--join", "http://a:1", "--join", "http://b:2"], 'join = ["http://a:1", "http://b:2"]'),
    (["--no-mdns"], "no-mdns = true"),
    (["--cluster-key", "k"], 'cluster-key = "k"'),
    (["--accept-cluster-key", "old"], 'accept-cluster-key = ["old"]'),
    (["--insecure"], "insecure = true"),
    (["--tls-cert", "c.pem"], 'tls-cert = "c.pem"'),
    (["--tls-key", "k.pem"], 'tls-key = "k.pem"'),
    (["--tls-ca", "ca.pem"], 'tls-ca = "ca.pem"'),
    (["--redis-url", "cache=redis://h/1"], 'redis-url = ["cache=redis://h/1"]'),
    (["--pool-size", "0"], "pool-size = 0"),
    (["--max-instances", "50"], "max-instances = 50"),
    (["--idle-timeout", "0"], "idle-timeout = 0"),
    (["--call-timeout", "2.5"], "call-timeout = 2.5"),
    (["--call-wall-timeout", "30"], "call-wall-timeout = 30"),
    (["--max-memory", "128"], "max-memory = 128"),
    (["--max-upload", "8"], "max-upload = 8"),
    (["--max-payload", "2"], "max-payload = 2"),
    (["--max-kv", "4"], "max-kv = 4"),
    (["--max-kv-keys", "100"], "max-kv-keys = 100"),
    (["--actor-idle", "30"], "actor-idle = 30"),
    (["--actor-wait", "2.5"], "actor-wait = 2.5"),
    (["--actor-state-max", "4096"], "actor-state-max = 4096"),
    (["--no-actor-quorum"], "no-actor-quorum = true"),
    (["--guest-log-rate", "5"], "guest-log-rate = 5"),
    (["--max-apps", "7"], "max-apps = 7"),
    (["--gc-interval", "0"], "gc-interval = 0"),
    (["--gc-grace", "60"], "gc-grace = 60"),
    (["--log-format", "json"], 'log-format = "json"'),
]
# Flags that cannot go alone: what each needs, given the same way.
NEEDS = {
    "--host": (["--insecure"], "insecure = true"),
    "--accept-cluster-key": (["--cluster-key", "k"], 'cluster-key = "k"'),
    "--tls-cert": (["--tls-key", "k.pem"], 'tls-key = "k.pem"'),
    "--tls-key": (["--tls-cert", "c.pem"], 'tls-cert = "c.pem"'),
    "--tls-ca": (
        ["--tls-cert", "c.pem", "--tls-key", "k.pem"],
        'tls-cert = "c.pem"\ntls-key = "k.pem"',
    ),
}


def test_the_samples_cover_every_flag() -> None:
    assert {argv[0] for argv, _ in SAMPLES} == {flag.name for _, flag in flags()}


@pytest.mark.parametrize(("argv", "toml"), SAMPLES, ids=[a[0] for a, _ in SAMPLES])
def test_a_file_key_sets_what_its_flag_sets(argv: list[str], toml: str, tmp_path: Path) -> None:
    extra_argv, extra_toml = NEEDS.get(argv[0], ([], ""))
    path = tmp_path / "node.toml"
    path.write_text(f"{toml}\n{extra_toml}\n")
    from_flags = run_config(*argv, *extra_argv)
    assert from_flags != Config()
    assert run_config("--config", str(path)) == from_flags


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'name = "from-file"\nport = 4100\ncluster-key = "k"\njoin = ["http://a:1"]\n'
        "max-memory = 32\n"
    )
    config = run_config("--config", str(path), "--port", "4200", "--join", "http://b:2")
    assert (config.name, config.port, config.cluster_key) == ("from-file", 4200, "k")
    assert config.join == ("http://b:2",)  # a repeatable flag replaces the file's list
    assert config.max_memory_mib == 32
    # $PORT is between the two: over the file, under the flag.
    assert run_config("--config", str(path), environ={"PORT": "4300"}).port == 4300
    assert run_config("--config", str(path), "--port", "1", environ={"PORT": "4300"}).port == 1


def test_combinations_are_checked_across_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('host = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=re.escape("listening on 0.0.0.0 reaches beyond")):
        run_config("--config", str(path))
    assert run_config("--config", str(path), "--cluster-key", "k").host == "0.0.0.0"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('colour = "blue"\nbogus = 1\nport = 4100', "unknown keys: bogus, colour (the keys are"),
        ('"--port" = 4100', "unknown keys: --port"),
        ('config = "other.toml"', "unknown keys: config"),
        ("[network]\nport = 4100", "unknown keys: network"),
        ("port = 70000", "port: port out of range 0-65535: 70000"),
        ('port = "http"', "port: not a port number: 'http'"),
        ("port = true", "port: expected a number, got True"),
        ("max-memory = 1.5", "max-memory: not an integer: '1.5'"),
        ("call-timeout = 0", "call-timeout: must be a positive number of seconds: 0"),
        ("name = 3", "name: expected a string, got 3"),
        ('insecure = "yes"', "insecure: expected true or false, got 'yes'"),
        ("join = 4", "join: expected a list of strings, got 4"),
        ("join = [4]", "join: expected a string, got 4"),
        ('log-format = "xml"', "log-format: invalid choice: 'xml'"),
        ("port = ", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_with_a_clear_message(
    toml: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(toml + "\n")
    data = tmp_path / "data"
    assert main(["run", "--config", str(path), "--data-dir", str(data), "--no-mdns"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"assemblexd run: error: --config {path}: ")
    assert message in err
    assert not data.exists()  # refused before anything started


def test_a_missing_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.toml"
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"assemblexd run: error: --config {path}: No such file or directory" in err


def test_a_single_string_for_a_repeatable_key(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('join = "http://a:1"\n')
    assert run_config("--config", str(path)).join == ("http://a:1",)


def test_the_actor_quorum_switch_has_both_forms() -> None:
    assert run_config().actor_quorum is True
    assert run_config("--no-actor-quorum").actor_quorum is False
    assert run_config("--actor-quorum").actor_quorum is True
    assert run_config("--no-actor-quorum", "--actor-quorum").actor_quorum is True
