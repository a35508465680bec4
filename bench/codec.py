#!/usr/bin/env python
"""Decoding frames and encoding masks, as a worker does, on 1 thread vs a CodecPool.

    python bench/codec.py                     # 32 frames of 1024x1024, threads 1 and every core
    python bench/codec.py --size 3840x2160 --frames 16 --threads 1,2,4

A GPU worker's model keeps up with hundreds of frames a second; the PNG decoding and mask
encoding around it (``maskfarm.worker.frames.decode_frame``, ``encoding.frame_result``)
then set the pace. This times exactly those calls over the same frames and masks, in
order, serially and through ``maskfarm.worker.codec_pool.CodecPool`` (``map`` for the
decoding, ``in_order`` for the encoding), and prints frames/s side by side.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time

import numpy as np
from PIL import Image

from maskfarm.core.jobs import OutputFormat
from maskfarm.worker.codec_pool import CodecPool
from maskfarm.worker.encoding import frame_result
from maskfarm.worker.frames import decode_frame


def smooth_png(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A photo-like frame: a few low-frequency gradients plus a little noise."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(rng.uniform(2, 8) * x + rng.uniform(2, 8) * y + rng.uniform(0, 6)) for _ in range(3)]
    image = (np.stack(channels, -1) * 100 + 128 + rng.normal(0, 3, (height, width, 3))).clip(0, 255)
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def exr_bytes(linear: np.ndarray, compression: str) -> bytes:
    """A scanline RGB half-float EXR, as a renderer would write it."""
    from maskfarm.core.exr import openexr

    exr = openexr()
    header = {"compression": getattr(exr, f"{compression.upper()}_COMPRESSION"), "type": exr.scanlineimage}
    channels = {name: np.ascontiguousarray(linear[..., c]) for c, name in enumerate("RGB")}
    buffer = io.BytesIO()
    exr.File(header, channels).write(buffer)
    return buffer.getvalue()


def blob_mask(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A mask like a real one: a soft-edged ellipse."""
    y, x = np.mgrid[0:height, 0:width]
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    distance = ((x - cx) / (0.2 * width)) ** 2 + ((y - cy) / (0.25 * height)) ** 2
    return np.clip(1.5 - distance, 0, 1).astype(np.float32)[None]


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1024x1024", help="WIDTHxHEIGHT (default 1024x1024)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the fastest counts")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    rng = np.random.default_rng(0)
    pngs = [smooth_png(rng, width, height) for _ in range(args.frames)]
    masks = [blob_mask(rng, width, height) for _ in range(args.frames)]

    print(
        f"codec benchmark: {args.frames} frames of {width}x{height} PNG (mean {np.mean([len(p) for p in pngs]) / 1e6:.2f} MB), "
        f"PNG8 masks; {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"{'threads':>7} {'decode frames/s':>16} {'encode frames/s':>16} {'both, ms/frame':>15}")
    baseline = None
    for threads in map(int, args.threads.split(",")):
        pool = CodecPool(threads)
        decode = min(timed(lambda: list(pool.map(decode_frame, pngs))) for _ in range(args.repeats))
        encode = min(
            timed(
                lambda: [
                    result()
                    for _, result in pool.in_order(lambda m: frame_result(0, m, OutputFormat.PNG8, False), masks)
                ]
            )
            for _ in range(args.repeats)
        )
        pool.close()
        both = 1000 * (decode + encode) / args.frames
        baseline = baseline or both
        print(
            f"{threads:>7} {args.frames / decode:>16.1f} {args.frames / encode:>16.1f} {both:>15.1f}"
            f"   {baseline / both:.2f}x"
        )


if __name__ == "__main__":
    main()
