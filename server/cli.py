"""``maskfarm server``: run the gRPC front end."""

from __future__ import annotations

import argparse

from maskfarm.server.settings import ServerSettings


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run the gRPC server (validates and queues jobs; needs Redis, not torch)",
        description="Serve the maskfarm.v1 Segmentation API, with gRPC health checking and "
        "reflection. Every flag falls back to its MASKFARM_* environment variable.",
    )
    ServerSettings.add_arguments(parser)
    parser.set_defaults(run=run_server)


def run_server(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sys

    from maskfarm.server.app import ListenError, serve
    from maskfarm.server.tls import TlsConfigError
    from maskfarm.server.tokens import TokenFileError

    try:
        settings = ServerSettings.from_args(args)
    except ValueError as error:
        print(f"maskfarm server: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(settings))
    except (TokenFileError, TlsConfigError) as error:
        print(f"maskfarm server: error: {error}", file=sys.stderr)
        return 2
    except ListenError as error:
        print(f"maskfarm server: error: {error}", file=sys.stderr)
        return 1
    return 0
