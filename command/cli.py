"""The ``maskfarm`` command.

Each package registers its own subcommands (``add_commands``) so the command line mirrors
the architecture: the client's commands in maskfarm.client.commands, ``server`` in
maskfarm.server.cli, ``worker`` and ``model`` in maskfarm.worker.cli, and ``up``, which runs them
all, in maskfarm.up. Registration imports only argparse-level code; the heavy
imports (grpc, torch) happen inside the command that needs them, so ``maskfarm --help``
works with the client alone installed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

_COMMAND_MODULES = ("maskfarm.client.commands", "maskfarm.server.cli", "maskfarm.worker.cli", "maskfarm.up")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskfarm",
        description="Text-prompted segmentation masks (CLIPSeg) as a service for render farms.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.add_commands(subcommands)
    return parser


EXIT_BROKEN_PIPE = 128 + 13
"""As a Unix tool killed by SIGPIPE exits (``maskfarm jobs | head -1``)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout's reader stopped reading: nothing to say, and nowhere to say it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush is quiet
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
