"""Pipeline benchmark: the node's per-frame loop vs maskfarm fp32 vs maskfarm bf16.

Runs every variant in its own process (so each peak RSS is its own; after a warm-up with
the same shapes, the fastest of ``--repeats`` timed runs counts) on the full synthetic
model (the exact CIDAS/clipseg-rd64-refined architecture, random weights) with 1024x1024
uint8 frames in memory, for 1 and 4 prompts, and prints the ratios side by side together
with the matmul peaks measured in the same run, the bf16-vs-fp32 disagreement, and the peak
RSS of a 64-frame 3840x2160 job.

    python bench/pipeline.py                 # everything (a few minutes on 2 cores)
    python bench/pipeline.py --frames 4 --big-frames 8   # quicker
    python bench/pipeline.py --device cuda   # the same on a GPU: 256 frames per variant, GPU memory too
    python bench/pipeline.py --whole-process # files to files, whole processes: bench/whole_process.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

VIT_GFLOP_PER_FRAME = 77.0  # 10 ViT-B/16 blocks at 485 tokens + decoder, one prompt
GPU_GOAL_FPS = 500.0  # the pipeline issue's figure for one H100, bf16, 1024x1024, one prompt
PROMPTS = ["red car", "a tree", "the sky", "a person"]


def main() -> None:
    if "--whole-process" in sys.argv[1:]:
        import whole_process

        sys.exit(whole_process.main([arg for arg in sys.argv[1:] if arg != "--whole-process"]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=".models/full", help="synthetic full model (written if missing)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where every variant runs")
    parser.add_argument("--frames", type=int, help="1024x1024 frames per variant (default 6 on cpu, 256 on cuda)")
    parser.add_argument("--big-frames", type=int, default=64, help="3840x2160 frames in the memory test")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the fastest counts")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.frames = args.frames or (256 if args.device == "cuda" else 6)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").exists():
        from maskfarm.worker.synthetic import write_synthetic_model

        write_synthetic_model(model_dir, preset="full")
    report(args, model_dir)


def report(args: argparse.Namespace, model_dir: Path) -> None:
    device = torch.device(args.device)
    peaks = {name: matmul_gflops(dtype, device) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(
        f"machine: {where}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
        f"matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s"
    )
    results = {}
    for prompts in (1, 4):
        for variant in ("node", "fp32", "bf16", "bf16-compile"):
            results[variant, prompts] = child(args, model_dir, variant, prompts, args.frames, args.repeats)
    print(f"\n{args.frames} frames 1024x1024 (uint8, in memory), full synthetic model, on {args.device}")
    gpu = f"{'peak GPU':>10}" if device.type == "cuda" else ""
    print(f"{'variant':<22}{'prompts':>8}{'frames/s':>10}{'s/frame':>9}{'vs node':>9}{'peak RSS':>10}{gpu}")
    for (variant, prompts), r in results.items():
        speedup = r["fps"] / results["node", prompts]["fps"]
        label = {
            "node": "node per-frame loop",
            "fp32": "maskfarm fp32",
            "bf16": "maskfarm bf16",
            "bf16-compile": "maskfarm bf16 compiled",
        }[variant]
        gpu = f"{r['gpu_mb']:>8.0f}MB" if device.type == "cuda" else ""
        print(f"{label:<22}{prompts:>8}{r['fps']:>10.2f}{1 / r['fps']:>9.3f}{speedup:>8.2f}x{r['rss_mb']:>8.0f}MB{gpu}")
    if device.type == "cuda":
        fps = results["bf16", 1]["fps"]
        print(
            f"\nGPU goal: maskfarm bf16, 1 prompt, {fps:.0f} frames/s (goal >= {GPU_GOAL_FPS:.0f} on one H100): "
            f"{'PASS' if fps >= GPU_GOAL_FPS else 'MISS'}"
        )
    ideal = VIT_GFLOP_PER_FRAME / peaks["bf16"]
    print(f"\nbf16 roofline: {VIT_GFLOP_PER_FRAME:.0f} GFLOP/frame / {peaks['bf16']:.0f} GFLOP/s = {ideal:.3f} s/frame")
    for variant in ("bf16", "bf16-compile"):
        measured = 1 / results[variant, 1]["fps"]
        print(f"  {variant}: {measured:.3f} s/frame = {measured / ideal:.2f}x the roofline")
    agreement = child(args, model_dir, "agreement", 1, min(args.frames, 6))
    print(
        f"bf16 vs fp32: logits max |diff| {agreement['max_logit_error']:.4f}, mean |diff| "
        f"{agreement['mean_logit_error']:.4f} (logit std {agreement['logit_std']:.2f}); "
        f"masks agree on {100 * agreement['mask_agreement']:.3f}% of pixels"
    )
    big = child(args, model_dir, "big", 1, args.big_frames)
    print(
        f"{args.big_frames}-frame 3840x2160 job (fp32, streamed, masks encoded to PNG as they come): "
        f"peak RSS {big['rss_mb']:.0f} MB, {big['fps']:.2f} frames/s"
    )


def child(args: argparse.Namespace, model_dir: Path, variant: str, prompts: int, frames: int, repeats: int = 1) -> dict:
    command = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--prompts",
        str(prompts),
        "--device",
        args.device,
        "--frames",
        str(frames),
        "--model-dir",
        str(model_dir),
        "--repeats",
        str(repeats),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_variant(args: argparse.Namespace) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    prompts, device = PROMPTS[: args.prompts], torch.device(args.device)
    if args.variant == "big":
        return run_big(args.model_dir, args.frames, device)
    if args.variant == "agreement":
        return run_agreement(args.model_dir, frames_1024(args.frames), device)
    frames = frames_1024(args.frames)
    if args.variant == "node":
        run = node_loop(args.model_dir, device)
    else:
        run = maskfarm_run(args.model_dir, args.variant, device)
    run(frames, prompts)  # warm-up with the same shapes: oneDNN (and torch.compile) build kernels per shape
    elapsed = min(timed(run, frames, prompts, device) for _ in range(args.repeats))
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return {"fps": len(frames) / elapsed, "rss_mb": peak_rss_mb(), "gpu_mb": gpu_mb}


def timed(run, frames, prompts, device: torch.device) -> float:
    start = time.perf_counter()
    run(frames, prompts)
    synchronize(device)
    return time.perf_counter() - start


def node_loop(model_dir: str, device: torch.device, keep: bool = False):
    """What ApplyCLIPSeg+ does, once per prompt: processor + full model call per frame.
    ``keep``: the run returns each prompt's (F, H, W) masks (bench/whole_process.py writes them)."""
    from torchvision.transforms import v2 as T
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    processor = CLIPSegProcessor.from_pretrained(model_dir)
    model = CLIPSegForImageSegmentation.from_pretrained(model_dir).eval().to(device)

    def run(frames, prompts):
        kept = []
        for prompt in prompts:
            outputs = []
            for frame in frames:
                inputs = processor(text=prompt, images=[frame], return_tensors="pt").to(device)
                with torch.no_grad():
                    outputs.append(torch.sigmoid(model(**inputs).logits[0]) > 0.4)
            masks = T.functional.gaussian_blur(torch.stack(outputs), 9).float()
            masks = torch.nn.functional.interpolate(masks.unsqueeze(1), size=frames[0].shape[:2], mode="bicubic")
            if keep:
                kept.append(masks[:, 0])
        return kept

    return run


def maskfarm_run(model_dir: str, variant: str, device: torch.device):
    from maskfarm.worker.pipeline import Segmenter

    dtype, _, compiled = variant.partition("-")
    segmenter = Segmenter.load(model_dir, device=device.type, dtype=dtype, compile=bool(compiled))
    return lambda frames, prompts: segmenter.segment(frames, prompts)


def run_agreement(model_dir: str, frames: list[np.ndarray], device: torch.device) -> dict:
    from maskfarm.worker.frames import to_rgb_uint8
    from maskfarm.worker.pipeline import Segmenter
    from maskfarm.worker.preprocess import pixel_values

    fp32 = Segmenter.load(model_dir, device=device.type, dtype="fp32")
    bf16 = Segmenter.load(model_dir, device=device.type, dtype="bf16")
    errors, agree, stds = [], [], []
    for frame in frames:
        pixels = pixel_values([to_rgb_uint8(frame)], fp32._spec, device)
        a = fp32._model.logits(pixels, PROMPTS[:1], 8).float()
        b = bf16._model.logits(pixels.bfloat16(), PROMPTS[:1], 8).float()
        errors.append((a - b).abs())
        stds.append(float(a.std()))
        ma, mb = fp32.segment([frame], PROMPTS[:1])[0].masks, bf16.segment([frame], PROMPTS[:1])[0].masks
        agree.append(float(np.mean(np.abs(ma - mb) < 0.5)))
    return {
        "max_logit_error": float(max(e.max() for e in errors)),
        "mean_logit_error": float(np.mean([float(e.mean()) for e in errors])),
        "logit_std": float(np.mean(stds)),
        "mask_agreement": float(np.mean(agree)),
    }


def run_big(model_dir: str, count: int, device: torch.device) -> dict:
    """A long 4K job streamed: frames made on demand, each mask PNG-encoded as the worker
    does and dropped."""
    from maskfarm.worker.encoding import encode_file
    from maskfarm.worker.pipeline import Segmenter

    segmenter = Segmenter.load(model_dir, device=device.type, dtype="fp32")
    rng = np.random.default_rng(0)
    template = rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
    frames = (np.roll(template, i, axis=1) for i in range(count))
    start = time.perf_counter()
    encoded = sum(
        len(encode_file(mask, "png")) for result in segmenter.stream(frames, PROMPTS[:1]) for mask in result.masks
    )
    elapsed = time.perf_counter() - start
    return {"fps": count / elapsed, "rss_mb": peak_rss_mb(), "bytes": encoded}


def frames_1024(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((count, 3, 32, 32), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(1024, 1024), mode="bilinear")
    return list((smooth * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


def matmul_gflops(dtype: torch.dtype, device: torch.device, repeats: int = 8) -> float:
    size = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
