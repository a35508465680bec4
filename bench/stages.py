#!/usr/bin/env python
"""Per-frame time of each stage of the worker's pipeline outside the model, on one core.

    python bench/stages.py                      # 1024x1024, 2048x1080, 3840x2160; ~1 s per cell
    python bench/stages.py --json stages.json   # the same, and the figures as JSON
    python bench/stages.py --sizes 64x48 --repeats 1 --model-preset tiny   # a smoke run

Every stage is the project's own function: ``worker.frames.decode_frame`` (+ ``to_rgb_uint8``),
``worker.preprocess.pixel_values``, ``worker.masks`` and the ``Segmenter``'s per-frame
post-processing, ``worker.encoding.frame_result`` (and ``client.outputs.encode_mask`` for
npy), ``SharedStorage.write_file`` and ``JobStore.store_frame_result`` into a private
redis-server. One core means: this process (and the redis-server it starts) pinned to one
CPU with ``sched_setaffinity``, ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/
``OPENBLAS_NUM_THREADS`` = 1 before numpy and torch load, ``torch.set_num_threads(1)`` and
``cv2.setNumThreads(1)``. Each cell is the median of N runs, N chosen so that a cell takes
about ``--seconds`` (or ``--repeats``). For scale, the model's own time per frame (the
``Segmenter``'s "model" stage, full synthetic model, fp32) and the fp32 matmul peak are
measured on the same core.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import e2e  # noqa: E402  (the private redis-server)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from codec import exr_bytes, smooth_png  # noqa: E402  (a photo-like frame, an EXR file)
from PIL import Image  # noqa: E402
from pipeline import matmul_gflops  # noqa: E402

from maskfarm.core.jobs import JobSpec, OutputFormat, Provenance  # noqa: E402
from maskfarm.core.outputs import encode_mask  # noqa: E402
from maskfarm.core.params import MaskParams  # noqa: E402
from maskfarm.core.prompts import as_prompt  # noqa: E402
from maskfarm.core.storage import StorageRoots  # noqa: E402
from maskfarm.jobqueue.store import JobStore  # noqa: E402
from maskfarm.worker.encoding import frame_result  # noqa: E402
from maskfarm.worker.frames import decode_frame, to_rgb_uint8  # noqa: E402
from maskfarm.worker.masks import mask_from_logits, resize_to  # noqa: E402
from maskfarm.worker.pipeline import Segmenter  # noqa: E402
from maskfarm.worker.preprocess import pixel_values  # noqa: E402
from maskfarm.worker.shared_storage import SharedStorage  # noqa: E402

SIZES = "1024x1024,2048x1080,3840x2160"
EXR_COMPRESSIONS = ("zip", "piz", "dwaa")
DEFAULTS = MaskParams()
BLUR_8 = MaskParams(blur=8)
UNION_INVERT = MaskParams(union=True, invert=True)
PROMPT = "a car"
PROMPT_SPEC = as_prompt(PROMPT)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=SIZES, help=f"WIDTHxHEIGHT, comma-separated (default {SIZES})")
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long each cell runs (default 1)")
    parser.add_argument("--repeats", type=int, default=0, help="runs per cell, overriding --seconds (0: by time)")
    parser.add_argument("--model-dir", default=".models/full", help="synthetic model (written if missing)")
    parser.add_argument("--model-preset", default="full", help="preset of a model written to --model-dir")
    parser.add_argument("--model-size", default="1024x1024", help="frame size of the model timing")
    parser.add_argument("--model-repeats", type=int, default=3, help="timed model runs, the median counts")
    parser.add_argument("--core", type=int, default=None, help="the CPU to pin to (default: the last allowed)")
    parser.add_argument("--write-dir", default="/dev/shm", help="where mask files are written (default /dev/shm)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE ('-': stdout)")
    return parser.parse_args(argv)


def pin_to_one_core(core: int | None) -> int:
    """Pins this process (and what it starts later) to one CPU, torch and OpenCV to one thread."""
    core = max(os.sched_getaffinity(0)) if core is None else core
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    cv2.setNumThreads(1)
    return core


@dataclass(frozen=True)
class Timer:
    """Times a stage: the median of N runs in ms, after one warm-up run that also sizes N
    (about ``seconds`` in all), or of exactly ``repeats`` runs when that is set."""

    seconds: float
    repeats: int = 0

    def ms(self, run: Callable[[], object]) -> float:
        start = time.perf_counter()
        run()
        first = time.perf_counter() - start
        count = self.repeats or max(1, min(200, round(self.seconds / max(first, 1e-6))))
        times = []
        for _ in range(count):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)


def encoded_frames(frame: np.ndarray) -> dict[str, bytes]:
    """The frame as every input file the table decodes."""
    sixteen = frame.astype(np.uint16) * 257
    bgr16 = cv2.cvtColor(sixteen, cv2.COLOR_RGB2BGR)
    jpeg = io.BytesIO()
    Image.fromarray(frame).save(jpeg, format="JPEG", quality=90)
    files = {
        "png8": png_bytes(frame),
        "png16": cv2.imencode(".png", bgr16)[1].tobytes(),
        "jpeg q90": jpeg.getvalue(),
        "tiff16 (OpenCV default)": cv2.imencode(".tiff", bgr16)[1].tobytes(),
    }
    linear = ((frame.astype(np.float32) / 255) ** 2.2).astype(np.float16)
    for compression in EXR_COMPRESSIONS:
        files[f"exr half {compression}"] = exr_bytes(linear, compression)
    return files


def png_bytes(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def blob_logits(height: int = 352, width: int = 352) -> torch.Tensor:
    """Logits like a real object's: high inside a soft ellipse, low outside, (1, H, W)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    return (4 - 8 * ((x / 0.5) ** 2 + (y / 0.6) ** 2)).unsqueeze(0)


def postprocess(logits: torch.Tensor, size: tuple[int, int], params: MaskParams) -> np.ndarray:
    """What the Segmenter does to one frame's logits after the model (1 prompt)."""
    small = mask_from_logits(logits, params)
    return Segmenter._frame_masks(small, size, [PROMPT_SPEC], params)


@dataclass
class Sinks:
    """Where masks go: mask files under ``storage``'s root, frame results into ``store``."""

    storage: SharedStorage
    store: JobStore
    job_id: str


def stage_rows(size: tuple[int, int], segmenter: Segmenter, sinks: Sinks, timer: Timer) -> dict[str, float]:
    """Every stage's ms per frame at ``size`` (height, width)."""
    height, width = size
    frame = np.array(decode_frame(smooth_png(np.random.default_rng(0), width, height)))
    rows = {
        f"decode {name}": timer.ms(lambda data=data: to_rgb_uint8(decode_frame(data)))
        for name, data in encoded_frames(frame).items()
    }
    rgb = to_rgb_uint8(frame)
    rows["preprocess to 352x352"] = timer.ms(lambda: pixel_values([rgb], segmenter._spec, torch.device("cpu")))
    rows.update(postprocess_rows(size, timer))
    masks = postprocess(blob_logits(), size, DEFAULTS)
    rows.update(encode_rows(masks, timer))
    rows.update(write_rows(masks, sinks, timer))
    return rows


def postprocess_rows(size: tuple[int, int], timer: Timer) -> dict[str, float]:
    """The steps at 352x352, the full-size resize alone, and the whole post-processing."""
    logits = blob_logits()
    small = mask_from_logits(logits, DEFAULTS)
    return {
        "post: threshold+smooth 9 at 352": timer.ms(lambda: mask_from_logits(logits, DEFAULTS)),
        "post: resize+clamp to frame": timer.ms(lambda: resize_to(small.clone(), size)),
        "post: whole, defaults": timer.ms(lambda: postprocess(logits, size, DEFAULTS)),
        "post: whole, blur 8": timer.ms(lambda: postprocess(logits, size, BLUR_8)),
        "post: whole, union+invert": timer.ms(lambda: postprocess(logits, size, UNION_INVERT)),
    }


def encode_rows(masks: np.ndarray, timer: Timer) -> dict[str, float]:
    """The worker's encoding of a frame's masks in each output format, and the npy file."""
    rows = {f"encode {fmt.value}": timer.ms(lambda fmt=fmt: frame_result(0, masks, fmt, False)) for fmt in OutputFormat}
    rows["encode npy (--local)"] = timer.ms(lambda: encode_mask(masks[0], "npy"))
    return rows


def write_rows(masks: np.ndarray, sinks: Sinks, timer: Timer) -> dict[str, float]:
    """A mask file written as the worker writes it, and the frame's result stored."""
    png8 = frame_result(0, masks, OutputFormat.PNG8, False)
    float32 = frame_result(0, masks, OutputFormat.FLOAT32, False)
    path = os.path.join(sinks.storage.roots.roots[0], "car", "frame.png")
    return {
        "write png8 file": timer.ms(lambda: sinks.storage.write_file(path, png8.masks[0])),
        "store png8 in Redis": timer.ms(lambda: sinks.store.store_frame_result(sinks.job_id, png8)),
        "store float32 in Redis": timer.ms(lambda: sinks.store.store_frame_result(sinks.job_id, float32)),
    }


class ModelTimer:
    """Collects the Segmenter's "model" stage time (a ``PipelineObserver``)."""

    def __init__(self) -> None:
        self.model_s: list[float] = []

    def stage(self, name: str, seconds: float) -> None:
        if name == "model":
            self.model_s.append(seconds)

    def batch(self, pairs: int) -> None:
        pass


def model_ms(segmenter: Segmenter, size: tuple[int, int], repeats: int) -> float:
    """Median time of the model alone (vision, text, decoder) on one frame of ``size``."""
    frame = np.array(decode_frame(smooth_png(np.random.default_rng(1), size[1], size[0])))
    timer = ModelTimer()
    segmenter.segment([frame], [PROMPT])
    segmenter.observer = timer
    for _ in range(repeats):
        segmenter.segment([frame], [PROMPT])
    segmenter.observer = None
    return 1000 * statistics.median(timer.model_s)


def load_segmenter(model_dir: str, preset: str) -> Segmenter:
    if not (Path(model_dir) / "config.json").exists():
        from maskfarm.worker.synthetic import write_synthetic_model

        write_synthetic_model(model_dir, preset=preset)
    return Segmenter.load(model_dir, device="cpu", dtype="fp32")


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' as (height, width)."""
    width, height = map(int, text.lower().split("x"))
    return height, width


def print_table(sizes: list[str], rows: dict[str, dict[str, float]]) -> None:
    width = max(len(name) for name in rows)
    print(f"{'stage, ms per frame':<{width}} " + " ".join(f"{size:>10}" for size in sizes))
    for name, cells in rows.items():
        print(f"{name:<{width}} " + " ".join(f"{cells[size]:>10.3f}" for size in sizes))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    core = pin_to_one_core(args.core)
    segmenter = load_segmenter(args.model_dir, args.model_preset)
    services = e2e.Services(Path(tempfile.mkdtemp(prefix="maskfarm-stages-")), f"sg{os.getpid()}")
    write_root = tempfile.mkdtemp(prefix="maskfarm-stages-", dir=args.write_dir)
    try:
        services.start_redis()
        import redis

        store = JobStore(redis.Redis.from_url(services.redis_url), services.namespace)
        job, _ = store.create(
            JobSpec(frames=[b"frame"], frame_names=["frame.png"], prompts=[PROMPT]),
            queue_ttl=3600,
            inputs_ttl=3600,
            result_ttl=3600,
        )
        store.mark_running(
            job.id, Provenance(model="synthetic", dtype="float32", device="cpu", worker="bench/stages.py")
        )
        sinks = Sinks(SharedStorage(roots=StorageRoots((write_root,))), store, job.id)
        timer = Timer(args.seconds, args.repeats)
        sizes = [size.strip() for size in args.sizes.split(",")]
        table: dict[str, dict[str, float]] = {}
        for size in sizes:
            for name, ms in stage_rows(parse_size(size), segmenter, sinks, timer).items():
                table.setdefault(name, {})[size] = ms
        model = model_ms(segmenter, parse_size(args.model_size), args.model_repeats)
        peak = matmul_gflops(torch.float32, torch.device("cpu"))
    finally:
        services.stop_all()
        for path in sorted(Path(write_root).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        os.rmdir(write_root)
    print(f"one core (CPU {core}), torch {torch.__version__}, files written under {args.write_dir}")
    print_table(sizes, table)
    print(f"model ({args.model_preset} synthetic, fp32, 1 prompt) at {args.model_size}: {model:.1f} ms per frame")
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s")
    figures = {
        "core": core,
        "sizes": sizes,
        "stages_ms": table,
        "model_ms": {"preset": args.model_preset, "size": args.model_size, "ms": model},
        "matmul_fp32_gflops": peak,
    }
    if args.json == "-":
        print(json.dumps(figures, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
