"""The ``assemblexd`` command line: its parsers, and the ``Config`` of ``run``'s arguments.

The ``run`` parser is made from the ``Flag`` metadata of ``Config``'s fields (``config.flags``),
so a setting is declared once. Its flags default to nothing (``argparse.SUPPRESS``): only the
flags given are in the namespace, and ``config_from_args`` lays them over the config file
(``--config``), the environment and ``Config``'s defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .client import DEFAULT_URL
from .config import GROUP_DESCRIPTIONS, Config, ConfigError, Flag, flags, read_config_file

__all__ = ["build_parser", "config_from_args"]

_DEFAULTS = Config()


def _arg_type(flag: Flag) -> Callable[[str], Any]:
    """``flag``'s parse function for argparse: its ValueError becomes a usage error."""

    def parse(text: str) -> Any:
        try:
            return flag.convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = flag.key
    return parse


def _help(field: dataclasses.Field[Any], flag: Flag) -> str:
    # The flags default to SUPPRESS, so argparse cannot fill in %(default)s: the field's
    # default is put in here, and any other % is escaped for argparse's own formatting.
    return (flag.help % {"default": field.default}).replace("%", "%%")


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run a node",
        description="Run a node and serve its HTTP API until SIGINT/SIGTERM.",
    )
    run.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        type=Path,
        default=None,
        help="TOML file of settings: its keys are the flags below without the leading --;"
        " flags given override it",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field, flag in flags():
        target: Any = run
        if flag.group is not None:
            if flag.group not in groups:
                groups[flag.group] = run.add_argument_group(
                    flag.group, GROUP_DESCRIPTIONS.get(flag.group)
                )
            target = groups[flag.group]
        kw: dict[str, Any] = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": _help(field, flag),
        }
        if flag.switch:
            kw["action"] = "store_false" if field.default else "store_true"
        else:
            kw["metavar"] = flag.metavar
            if flag.choices is not None:
                kw["choices"] = flag.choices
            else:
                kw["type"] = _arg_type(flag)
            if flag.repeatable:
                kw["action"] = "append"
        target.add_argument(flag.name, **kw)
        if flag.default_switch is not None:
            target.add_argument(
                flag.default_switch,
                dest=field.name,
                action="store_const",
                const=field.default,
                default=argparse.SUPPRESS,
                help=f"the default; the opposite of {flag.name}",
            )


def _add_url(p: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    p.add_argument(
        "--url",
        default=environ.get("ASSEMBLEX_URL", DEFAULT_URL),
        help="base URL of the node (default: $ASSEMBLEX_URL or %(default)s)",
    )
    ca = environ.get("ASSEMBLEX_TLS_CA")
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        type=Path,
        default=Path(ca) if ca else None,
        help="PEM bundle of the CAs trusted for an https:// URL (default: $ASSEMBLEX_TLS_CA,"
        " else the system's trust store)",
    )


def _add_token(p: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    p.add_argument(
        "--token",
        default=environ.get("ASSEMBLEX_TOKEN"),
        help="deploy token, where the node requires one (default: $ASSEMBLEX_TOKEN)",
    )


def _add_read_token(p: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    p.add_argument(
        "--read-token",
        metavar="T",
        default=environ.get("ASSEMBLEX_READ_TOKEN"),
        help="the node's read token (or its deploy token), where it requires one; without"
        " it, status shows no peer ids or addresses (default: $ASSEMBLEX_READ_TOKEN)",
    )


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The full command-line parser; defaults that come from the environment read ``environ``."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="assemblexd",
        description="Assemblex: a peer-to-peer serverless platform for WebAssembly (waPC).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)

    deploy = sub.add_parser(
        "deploy", help="deploy a module", description="Upload a waPC module to a node."
    )
    deploy.add_argument("file", type=Path, metavar="FILE", help="the .wasm module")
    deploy.add_argument("--name", default=None, help="app name (default: FILE without .wasm)")
    deploy.add_argument(
        "--capabilities",
        default=None,
        metavar="NS[,NS...]",
        help="host namespaces to grant (host, kv, redis, call; default: all)",
    )
    _add_token(deploy, env)
    _add_url(deploy, env)

    call = sub.add_parser(
        "call",
        help="call an app",
        description="Call an operation of an app; the response bytes go to stdout.",
    )
    call.add_argument("app", metavar="APP")
    call.add_argument("op", metavar="OP", nargs="?", default="main", help="(default: %(default)s)")
    data = call.add_mutually_exclusive_group()
    data.add_argument("--data", default=None, metavar="S", help="payload text (UTF-8)")
    data.add_argument(
        "--data-file", type=Path, default=None, metavar="F", help="payload file ('-' for stdin)"
    )
    call.add_argument(
        "--token",
        default=env.get("ASSEMBLEX_CALL_TOKEN"),
        help="call token, where the node requires one (default: $ASSEMBLEX_CALL_TOKEN)",
    )
    _add_url(call, env)

    actor = sub.add_parser(
        "actor",
        help="call an actor, or show where it lives",
        description="With OP, run an operation on the actor KEY of APP (the response bytes"
        " go to stdout); without, show its owner, generation, whether it is active and its"
        " pending alarm.",
    )
    actor.add_argument("app", metavar="APP")
    actor.add_argument("key", metavar="KEY")
    actor.add_argument("op", metavar="OP", nargs="?", default=None)
    data = actor.add_mutually_exclusive_group()
    data.add_argument("--data", default=None, metavar="S", help="payload text (UTF-8), with OP")
    data.add_argument(
        "--data-file",
        type=Path,
        default=None,
        metavar="F",
        help="payload file ('-' for stdin), with OP",
    )
    actor.add_argument("--json", action="store_true", help="without OP: print the raw JSON instead")
    actor.add_argument(
        "--token",
        default=env.get("ASSEMBLEX_CALL_TOKEN"),
        help="call token, where the node requires one (default: $ASSEMBLEX_CALL_TOKEN)",
    )
    _add_url(actor, env)

    apps = sub.add_parser(
        "apps",
        help="list apps",
        description="List the apps a node knows; with APP, that app's versions (current and"
        " those a rollback goes back to, newest first).",
    )
    apps.add_argument("app", metavar="APP", nargs="?", default=None)
    _add_read_token(apps, env)
    _add_url(apps, env)

    rollback = sub.add_parser(
        "rollback",
        help="roll an app back",
        description="Make the previous version of an app current again, on every node (as a"
        " new version); again goes one further back.",
    )
    rollback.add_argument("app", metavar="APP")
    _add_token(rollback, env)
    _add_url(rollback, env)

    undeploy = sub.add_parser(
        "undeploy", help="remove an app", description="Remove an app from every node."
    )
    undeploy.add_argument("app", metavar="APP")
    _add_token(undeploy, env)
    _add_url(undeploy, env)

    status = sub.add_parser(
        "status", help="show a node's status", description="Summarize a node's status."
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON instead")
    _add_read_token(status, env)
    _add_url(status, env)

    salvage = sub.add_parser(
        "salvage-log",
        help="recover a damaged replica.log",
        description="Recover the replica.log of a stopped node that refuses to start because"
        " the log is damaged before intact records: keep every intact record, skip the damaged"
        " ones (their content is lost on this node; peers may still have it), keep the"
        " damaged file as replica.log.damaged and write a clean log.",
    )
    salvage.add_argument(
        "--data-dir",
        metavar="D",
        type=Path,
        default=_DEFAULTS.data_dir,
        help="the node's data dir; the node must not be running (default: %(default)s)",
    )
    return parser


def config_from_args(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """The node configuration of parsed ``run`` arguments, with this machine's primary address
    found when it listens on every interface (``Config.with_primary_address``).

    Each setting is, first found: its flag, its environment variable (``$PORT``), the config
    file's key (``--config``), ``Config``'s default. Raises ConfigError (a ValueError) on bad
    values.
    """
    env = os.environ if environ is None else environ
    given = vars(ns)
    values: dict[str, Any] = {}
    config_file = given.get("config_file")
    if config_file is not None:
        values.update(read_config_file(config_file))
    for field, flag in flags():
        if field.name in given:
            value = given[field.name]
            values[field.name] = tuple(value) if flag.repeatable else value
        elif flag.env is not None and (text := env.get(flag.env, "").strip()):
            try:
                values[field.name] = flag.convert(text)
            except ValueError as e:
                raise ConfigError(f"${flag.env}: {e}") from None
    return Config(**values).with_primary_address()
