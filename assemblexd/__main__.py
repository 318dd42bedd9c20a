"""The ``assemblexd`` command: run a node, or talk to one.

``main(argv)`` parses ``argv`` (``cli_parse``) and returns the exit status of the subcommand
(``commands``); ``run`` builds a frozen ``Config`` from its flags and config file and serves
the node (``serve``) until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

from . import commands
from .cli_parse import build_parser, config_from_args
from .client import ClientError
from .serve import load_tls, serve

__all__ = ["build_parser", "config_from_args", "load_tls", "main", "serve"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``assemblexd`` command line; returns the exit status."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:
        # --help and usage errors: argparse already printed; keep main() returning.
        return e.code if isinstance(e.code, int) else 2
    if ns.command == "run":
        return commands.run(ns)
    if ns.command == "salvage-log":
        return commands.salvage_log(ns.data_dir)
    try:
        return asyncio.run(commands.client_command(ns))
    except ClientError as e:
        print(f"assemblexd {ns.command}: error: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"assemblexd {ns.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
