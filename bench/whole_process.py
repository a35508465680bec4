#!/usr/bin/env python
"""Whole processes, files to files: the node's per-frame loop vs ``maskfarm segment --local``.

    python bench/whole_process.py                  # 1 and 4 prompts, 12 marginal frames, 3 rounds
    python bench/whole_process.py --in-process     # the same files, the steady state in one process
    python bench/whole_process.py --rounds 1 --frames 2 --size 64 --model-dir .models/tiny   # smoke

Each variant is a fresh process given PNG files (photo-like, ``--size`` square) and writing
PNG masks, as a user runs it: Python start, imports, model load, reading, decoding, the
model, post-processing, encoding and writing. Each runs on 1 frame and on 1 + ``--frames``
frames in the same round; their difference over ``--frames`` is that round's marginal time
per frame (start-up and model load cancel out). Rounds interleave the variants (each round
runs every one), so load from elsewhere hits all alike, and the median round counts (a
start-up that varies by a second moves one round's difference, not the median's).

- node: what ``ApplyCLIPSeg+`` does, in a loop over the files (bench/pipeline.py's
  ``node_loop``, reading each file with Pillow and saving each mask as ComfyUI's SaveImage
  does: PNG, compress level 4).
- local: ``python -m maskfarm.cli segment FILES -p ... --local --dtype fp32``.
- local sequential: ``maskfarm.worker.local.segment_files_locally`` with nothing overlapped
  (``read_ahead=0, write_threads=1``), the same code otherwise: what the overlap buys.
- local batched: ``segment --local --frame-threads 1``: each chunk in one model call on
  every core instead of one frame per core side by side: what the frame threads buy.

``--in-process`` runs the same variants on the same files in this process, each loaded
once (``segment_files_locally`` for local, as the CLI calls it): what a frame costs once
running, without the start-up whose noise the whole-process difference has to beat.

Printed: seconds per frame, the ratio to the node, the fp32 roofline (``VIT_GFLOP_PER_FRAME``
over the fp32 matmul peak, the best of 5 measurements before and 5 after the rounds in this
process, torch's default threads) and the goals: 1 prompt >= 1.15x the node and within 1.3x of the roofline; 4
prompts >= 4x the node: PASS or MISS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from codec import smooth_png  # noqa: E402
from pipeline import PROMPTS, VIT_GFLOP_PER_FRAME, matmul_gflops  # noqa: E402

VARIANTS = ("node", "local", "local sequential", "local batched")
GOAL_VS_NODE_1 = 1.15
GOAL_VS_ROOFLINE_1 = 1.3
GOAL_VS_NODE_4 = 4.0
COMFY_PNG_LEVEL = 4  # ComfyUI SaveImage's compress_level


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=".models/full", help="synthetic model (full written if missing)")
    parser.add_argument("--frames", type=int, default=12, help="marginal frames (default 12)")
    parser.add_argument("--size", type=int, default=1024, help="frame side in pixels (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts (default 3)")
    parser.add_argument("--prompts", default="1,4", help="prompt counts, comma separated (default 1,4)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="the same variants and files in this one process, each loaded once: the steady state, no start-up",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the children: one process per run ---------------------------------------------------------


def node_child(model_dir: str, files: list[str], prompts: list[str], outdir: str) -> None:
    from pipeline import node_loop

    node_files(node_loop(model_dir, torch.device("cpu"), keep=True), files, prompts, outdir)


def node_files(run, files: list[str], prompts: list[str], outdir: str) -> None:
    """The node's loop over files: per prompt, per frame, processor + full model, then the
    node's post-processing and one PNG per mask (``run``: bench/pipeline.py's ``node_loop``)."""
    from PIL import Image

    frames = [np.asarray(Image.open(path).convert("RGB")) for path in files]
    for prompt, masks in zip(prompts, run(frames, prompts)):
        folder = Path(outdir) / prompt.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for path, mask in zip(files, masks):
            values = (mask.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            Image.fromarray(values).save(folder / Path(path).name, compress_level=COMFY_PNG_LEVEL)


def sequential_child(model_dir: str, files: list[str], prompts: list[str], outdir: str) -> None:
    from maskfarm.worker.pipeline import Segmenter

    sequential(Segmenter.load(model_dir, device="cpu", dtype="fp32"), files, prompts, outdir)


def sequential(segmenter, files: list[str], prompts: list[str], outdir: str) -> None:
    """``segment --local``'s code with nothing overlapped."""
    from maskfarm.worker.local import segment_files_locally

    segment_files_locally(segmenter, files, prompts, outdir, read_ahead=0, write_threads=1)


def run_child(spec: dict) -> None:
    {"node": node_child, "local sequential": sequential_child}[spec["variant"]](
        spec["model_dir"], spec["files"], spec["prompts"], spec["outdir"]
    )


# -- in process: the steady state, start-up left out --------------------------------------------


def measure_in_process(args: argparse.Namespace, scratch: Path) -> dict:
    """The same variants on the same files in this one process, each loaded once and warmed
    up on one frame: seconds per frame over all 1 + ``--frames`` files, rounds interleaved,
    the median counting. No start-up to subtract, so far less noise than whole processes;
    the files read and written are the same."""
    from pipeline import node_loop

    from maskfarm.worker.local import segment_files_locally
    from maskfarm.worker.pipeline import Segmenter

    files = write_frames(scratch / "frames", 1 + args.frames, args.size)
    counts = [int(n) for n in args.prompts.split(",")]
    node = node_loop(args.model_dir, torch.device("cpu"), keep=True)
    segmenter = Segmenter.load(args.model_dir, device="cpu", dtype="fp32")
    batched = Segmenter.load(args.model_dir, device="cpu", dtype="fp32", frame_threads=1)
    runs = {
        "node": lambda files, prompts, out: node_files(node, files, prompts, out),
        "local": lambda files, prompts, out: segment_files_locally(segmenter, files, prompts, out),
        "local sequential": lambda files, prompts, out: sequential(segmenter, files, prompts, out),
        "local batched": lambda files, prompts, out: segment_files_locally(batched, files, prompts, out),
    }
    for variant, run in runs.items():
        run(files[:1], PROMPTS[:1], str(scratch / f"warm-{variant.replace(' ', '-')}"))
    rounds: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for prompts in counts:
            for variant, run in runs.items():
                start = time.perf_counter()
                run(files, PROMPTS[:prompts], str(scratch / f"out-{round_}-{prompts}-{variant.replace(' ', '-')}"))
                seconds = (time.perf_counter() - start) / len(files)
                rounds.setdefault(f"{variant}|{prompts}", []).append(seconds)
                print(f"  round {round_ + 1}: {variant}, {prompts} prompt(s): {seconds:.3f} s/frame")
    return {
        "counts": counts,
        "marginal_s": {key: statistics.median(values) for key, values in rounds.items()},
        "rounds_s": rounds,
    }


# -- the parent -------------------------------------------------------------------------------


def command(variant: str, model_dir: str, files: list[str], prompts: list[str], outdir: str) -> list[str]:
    if variant in ("local", "local batched"):
        flags = [arg for prompt in prompts for arg in ("-p", prompt)]
        options = ["--local", "--model", model_dir, "--device", "cpu", "--dtype", "fp32", "--overwrite", "-o", outdir]
        if variant == "local batched":
            options += ["--frame-threads", "1"]
        return [sys.executable, "-m", "maskfarm.cli", "segment", *files, *flags, *options]
    spec = {"variant": variant, "model_dir": model_dir, "files": files, "prompts": prompts, "outdir": outdir}
    return [sys.executable, __file__, "--child", json.dumps(spec)]


def timed_run(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... failed ({done.returncode}): {done.stderr[-3000:]}")
    return elapsed


def write_frames(folder: Path, count: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for n in range(count):
        path = folder / f"shot.{1001 + n:04d}.png"
        path.write_bytes(smooth_png(rng, size, size))
        paths.append(str(path))
    return paths


def measure(args: argparse.Namespace, scratch: Path) -> dict:
    files = write_frames(scratch / "frames", 1 + args.frames, args.size)
    counts = [int(n) for n in args.prompts.split(",")]
    whole: dict[tuple[str, int, int], list[float]] = {}
    for round_ in range(args.rounds):
        for prompts in counts:
            for variant in VARIANTS:
                for frames in (1, 1 + args.frames):
                    outdir = str(scratch / f"out-{round_}-{prompts}-{variant.replace(' ', '-')}-{frames}")
                    argv = command(variant, args.model_dir, files[:frames], PROMPTS[:prompts], outdir)
                    seconds = timed_run(argv)
                    whole.setdefault((variant, prompts, frames), []).append(seconds)
                    print(f"  round {round_ + 1}: {variant}, {prompts} prompt(s), {frames} frame(s): {seconds:.2f} s")
    rounds = {
        f"{variant}|{prompts}": [
            (many - one) / args.frames
            for one, many in zip(whole[variant, prompts, 1], whole[variant, prompts, 1 + args.frames])
        ]
        for variant in VARIANTS
        for prompts in counts
    }
    return {
        "counts": counts,
        "marginal_s": {key: statistics.median(values) for key, values in rounds.items()},
        "rounds_s": rounds,
        "whole_s": {"|".join(map(str, key)): values for key, values in whole.items()},
    }


def report(args: argparse.Namespace, figures: dict) -> None:
    peak, marginal = figures["matmul_fp32_gflops"], figures["marginal_s"]
    roofline = VIT_GFLOP_PER_FRAME / peak
    print(
        f"\n{args.size}x{args.size} PNG files, "
        + (f"{1 + args.frames} frames in this process" if args.in_process else f"{args.frames} marginal frames")
        + f", median of {args.rounds} rounds; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    print(f"{'variant':<18}{'prompts':>8}{'s/frame':>9}{'rounds':>15}{'vs node':>9}{'vs roofline':>13}")
    for prompts in figures["counts"]:
        node = marginal[f"node|{prompts}"]
        for variant in VARIANTS:
            s, spread = marginal[f"{variant}|{prompts}"], figures["rounds_s"][f"{variant}|{prompts}"]
            span = f"{min(spread):.3f}-{max(spread):.3f}"
            print(f"{variant:<18}{prompts:>8}{s:>9.3f}{span:>15}{node / s:>8.2f}x{s / roofline:>12.2f}x")
    measured = "/".join(f"{gflops:.0f}" for gflops in figures.get("matmul_fp32_gflops_before_after", []))
    print(
        f"fp32 roofline: {VIT_GFLOP_PER_FRAME:.0f} GFLOP/frame / {peak:.0f} GFLOP/s = {roofline:.3f} s/frame"
        + (f" (peak before/after the rounds: {measured} GFLOP/s)" if measured else "")
    )
    for line in goals(figures, roofline):
        print(line)


def goals(figures: dict, roofline: float) -> list[str]:
    marginal, lines = figures["marginal_s"], []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    if 1 in figures["counts"]:
        local, node = marginal["local|1"], marginal["node|1"]
        lines.append(
            f"goal: 1 prompt, local >= {GOAL_VS_NODE_1}x the node: {node / local:.2f}x {verdict(node / local >= GOAL_VS_NODE_1)}"
        )
        lines.append(
            f"goal: 1 prompt, local within {GOAL_VS_ROOFLINE_1}x the fp32 roofline: {local / roofline:.2f}x "
            f"{verdict(local / roofline <= GOAL_VS_ROOFLINE_1)}"
        )
    if 4 in figures["counts"]:
        local, node = marginal["local|4"], marginal["node|4"]
        lines.append(
            f"goal: 4 prompts, local >= {GOAL_VS_NODE_4}x the node: {node / local:.2f}x {verdict(node / local >= GOAL_VS_NODE_4)}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return 0
    if not (Path(args.model_dir) / "config.json").exists():
        from maskfarm.worker.synthetic import write_synthetic_model

        write_synthetic_model(args.model_dir, preset="full")
    # The peak is the best of 5 before and 5 after the rounds: one slow moment of a shared
    # host at the start would otherwise lower the roofline for the whole run.
    before = max(matmul_gflops(torch.float32, torch.device("cpu")) for _ in range(5))
    with tempfile.TemporaryDirectory(prefix="maskfarm-whole-") as scratch:
        (Path(scratch) / "frames").mkdir()
        figures = (measure_in_process if args.in_process else measure)(args, Path(scratch))
    after = max(matmul_gflops(torch.float32, torch.device("cpu")) for _ in range(5))
    figures["matmul_fp32_gflops"] = max(before, after)
    figures["matmul_fp32_gflops_before_after"] = [before, after]
    report(args, figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
