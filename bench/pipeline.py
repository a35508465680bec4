"""Pipeline benchmark: the node's per-frame loop vs maskfarm fp32 vs maskfarm bf16.

Runs every variant in its own process (so each peak RSS is its own; after a warm-up with
the same shapes, the fastest of ``--repeats`` timed runs counts) on the full synthetic
model (the exact CIDAS/clipseg-rd64-refined architecture, random weights) with 1024x1024
uint8 frames in memory, for 1 and 4 prompts, and prints the ratios side by side together
with the matmul peaks measured in the same run, the bf16-vs-fp32 disagreement, and the peak
RSS of a 64-frame 3840x2160 job.

    python bench/pipeline.py                 # everything (a few minutes on 2 cores)
    python bench/pipeline.py --frames 4 --big-frames 8   # quicker
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
PROMPTS = ["red car", "a tree", "the sky", "a person"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=".models/full", help="synthetic full model (written if missing)")
    parser.add_argument("--frames", type=int, default=6, help="1024x1024 frames per variant")
    parser.add_argument("--big-frames", type=int, default=64, help="3840x2160 frames in the memory test")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the fastest counts")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").exists():
        from maskfarm.worker.synthetic import write_synthetic_model

        write_synthetic_model(model_dir, preset="full")
    report(args, model_dir)


def report(args: argparse.Namespace, model_dir: Path) -> None:
    peaks = {name: matmul_gflops(dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    results = {}
    for prompts in (1, 4):
        for variant in ("node", "fp32", "bf16", "bf16-compile"):
            results[variant, prompts] = child(model_dir, variant, prompts, args.frames, args.repeats)
    print(f"\n{args.frames} frames 1024x1024, full synthetic model")
    print(f"{'variant':<22}{'prompts':>8}{'frames/s':>10}{'s/frame':>9}{'vs node':>9}{'peak RSS':>10}")
    for (variant, prompts), r in results.items():
        speedup = r["fps"] / results["node", prompts]["fps"]
        label = {"node": "node per-frame loop", "fp32": "maskfarm fp32", "bf16": "maskfarm bf16",
                 "bf16-compile": "maskfarm bf16 compiled"}[variant]
        print(f"{label:<22}{prompts:>8}{r['fps']:>10.2f}{1 / r['fps']:>9.3f}{speedup:>8.2f}x{r['rss_mb']:>8.0f}MB")
    ideal = VIT_GFLOP_PER_FRAME / peaks["bf16"]
    print(f"\nbf16 roofline: {VIT_GFLOP_PER_FRAME:.0f} GFLOP/frame / {peaks['bf16']:.0f} GFLOP/s = {ideal:.3f} s/frame")
    for variant in ("bf16", "bf16-compile"):
        measured = 1 / results[variant, 1]["fps"]
        print(f"  {variant}: {measured:.3f} s/frame = {measured / ideal:.2f}x the roofline")
    agreement = child(model_dir, "agreement", 1, args.frames)
    print(f"bf16 vs fp32: logits max |diff| {agreement['max_logit_error']:.4f}, mean |diff| "
          f"{agreement['mean_logit_error']:.4f} (logit std {agreement['logit_std']:.2f}); "
          f"masks agree on {100 * agreement['mask_agreement']:.3f}% of pixels")
    big = child(model_dir, "big", 1, args.big_frames)
    print(f"{args.big_frames}-frame 3840x2160 job (fp32, streamed, masks encoded to PNG as they come): "
          f"peak RSS {big['rss_mb']:.0f} MB, {big['fps']:.2f} frames/s")


def child(model_dir: Path, variant: str, prompts: int, frames: int, repeats: int = 1) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--prompts", str(prompts),
               "--frames", str(frames), "--model-dir", str(model_dir), "--repeats", str(repeats)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_variant(args: argparse.Namespace) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    prompts = PROMPTS[: args.prompts]
    if args.variant == "big":
        return run_big(args.model_dir, args.frames)
    if args.variant == "agreement":
        return run_agreement(args.model_dir, frames_1024(args.frames))
    frames = frames_1024(args.frames)
    run = node_loop(args.model_dir) if args.variant == "node" else maskfarm_run(args.model_dir, args.variant)
    run(frames, prompts)  # warm-up with the same shapes: oneDNN (and torch.compile) build kernels per shape
    elapsed = min(timed(run, frames, prompts) for _ in range(args.repeats))
    return {"fps": len(frames) / elapsed, "rss_mb": peak_rss_mb()}


def timed(run, frames, prompts) -> float:
    start = time.perf_counter()
    run(frames, prompts)
    return time.perf_counter() - start


def node_loop(model_dir: str):
    """What ApplyCLIPSeg+ does, once per prompt: processor + full model call per frame."""
    from torchvision.transforms import v2 as T
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    processor = CLIPSegProcessor.from_pretrained(model_dir)
    model = CLIPSegForImageSegmentation.from_pretrained(model_dir).eval()

    def run(frames, prompts):
        for prompt in prompts:
            outputs = []
            for frame in frames:
                inputs = processor(text=prompt, images=[frame], return_tensors="pt")
                with torch.no_grad():
                    outputs.append(torch.sigmoid(model(**inputs).logits[0]) > 0.4)
            masks = T.functional.gaussian_blur(torch.stack(outputs), 9).float()
            torch.nn.functional.interpolate(masks.unsqueeze(1), size=frames[0].shape[:2], mode="bicubic")

    return run


def maskfarm_run(model_dir: str, variant: str):
    from maskfarm.worker.pipeline import Segmenter

    dtype, _, compiled = variant.partition("-")
    segmenter = Segmenter.load(model_dir, device="cpu", dtype=dtype, compile=bool(compiled))
    return lambda frames, prompts: segmenter.segment(frames, prompts)


def run_agreement(model_dir: str, frames: list[np.ndarray]) -> dict:
    from maskfarm.worker.frames import to_rgb_uint8
    from maskfarm.worker.pipeline import Segmenter
    from maskfarm.worker.preprocess import pixel_values

    fp32 = Segmenter.load(model_dir, device="cpu", dtype="fp32")
    bf16 = Segmenter.load(model_dir, device="cpu", dtype="bf16")
    errors, agree, stds = [], [], []
    for frame in frames:
        pixels = pixel_values([to_rgb_uint8(frame)], fp32._spec, torch.device("cpu"))
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


def run_big(model_dir: str, count: int) -> dict:
    """A long 4K job streamed: frames made on demand, each mask PNG-encoded and dropped."""
    from maskfarm.client.outputs import encode_mask
    from maskfarm.worker.pipeline import Segmenter

    segmenter = Segmenter.load(model_dir, device="cpu", dtype="fp32")
    rng = np.random.default_rng(0)
    template = rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
    frames = (np.roll(template, i, axis=1) for i in range(count))
    start = time.perf_counter()
    encoded = sum(len(encode_mask(mask)) for result in segmenter.stream(frames, PROMPTS[:1]) for mask in result.masks)
    elapsed = time.perf_counter() - start
    return {"fps": count / elapsed, "rss_mb": peak_rss_mb(), "bytes": encoded}


def frames_1024(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((count, 3, 32, 32), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(1024, 1024), mode="bilinear")
    return list((smooth * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 8) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
