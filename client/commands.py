"""Client-side subcommands: ``segment`` and ``health``."""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_TARGET = "localhost:50051"


def add_commands(subcommands: argparse._SubParsersAction) -> None:
    from maskfarm.worker.cli import add_model_options

    segment = subcommands.add_parser("segment", help="write one mask per frame and prompt")
    segment.add_argument("frames", nargs="+", help="image files (PNG, JPEG, TIFF, WebP, BMP)")
    segment.add_argument("--prompt", "-p", action="append", required=True, help="text prompt; repeat for several")
    segment.add_argument("--output", "-o", default="masks", help="output folder (default: masks)")
    segment.add_argument("--format", choices=("png", "png16", "npy"), default="png",
                         help="png: 8-bit; png16: 16-bit; npy: float32, exact (default: png)")
    segment.add_argument("--threshold", type=float, default=0.4, help="probability above which a pixel is in (default 0.4)")
    segment.add_argument("--smooth", type=int, default=9, help="majority-vote smoothing kernel, 0-32 (default 9)")
    segment.add_argument("--dilate", type=int, default=0, help="grow (>0) or shrink (<0) by this many pixels, -32-32")
    segment.add_argument("--blur", type=int, default=0, help="Gaussian blur kernel of the final mask, 0-64")
    segment.add_argument("--soft", action="store_true", help="the probability map itself: no threshold/smooth/dilate/blur")
    segment.add_argument("--union", action="store_true", help="also write the union of the prompts' masks (union/)")
    segment.add_argument("--invert", action="store_true", help="write 1 - mask (applied last)")
    segment.add_argument("--local", action="store_true", help="run the pipeline in this process (no server, no Redis)")
    segment.add_argument("--target", default=os.environ.get("MASKFARM_TARGET", DEFAULT_TARGET),
                         help="server address (env MASKFARM_TARGET, default localhost:50051)")
    add_model_options(segment)
    segment.set_defaults(run=run_segment)

    health = subcommands.add_parser("health", help="exit 0 when the server reports SERVING")
    health.add_argument("--target", default=os.environ.get("MASKFARM_TARGET", DEFAULT_TARGET),
                        help="server address (env MASKFARM_TARGET, default localhost:50051)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)")
    health.set_defaults(run=run_health)


def run_segment(args: argparse.Namespace) -> int:
    from maskfarm.server.params import MaskParams

    try:
        params = MaskParams(threshold=args.threshold, smooth=args.smooth, dilate=args.dilate, blur=args.blur,
                            soft=args.soft, invert=args.invert, union=args.union)
    except ValueError as error:
        print(f"maskfarm segment: --{error}", file=sys.stderr)
        return 2
    if args.local:
        from maskfarm.worker.cli import run_local_segment

        return run_local_segment(args, params)
    print("maskfarm segment: only --local is available in this version; the service client is on its way",
          file=sys.stderr)
    return 2


def run_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"maskfarm health: {args.target}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
