#!/usr/bin/env python
"""Where one frame's time goes inside and around the model, against the fp32 roofline.

    python bench/model_profile.py                    # 1024x1024 PNG, 1 prompt, full synthetic model, fp32
    python bench/model_profile.py --prompts 4 --frames 8
    python bench/model_profile.py --size 64x48 --model-dir .models/tiny --model-preset tiny --frames 1   # smoke

One frame at a time through the project's own functions, as ``maskfarm segment --local``
runs it: ``decode_frame`` + ``to_rgb_uint8`` of a PNG, ``pixel_values``, the ``MaskModel``
(vision tower, text embedding, decoder), the ``Segmenter``'s post-processing, the PNG8
encoding and the file write. Inside the model, forward hooks on the vision tower's modules
time the patch embedding, the layer norms, the q/k/v/out projections, the attention core
(scaled dot product: the attention module less its projections), the MLP's two linear
layers, its quick-GELU (the MLP less them) and the residual adds (each block less its
parts); the decoder is one row. Hooks cost ~1 us each (~130 per frame).

Each row also says its matmul GFLOP (counted from the model's config), the GFLOP/s it ran
at, and its time above the roofline: its ms less GFLOP / the fp32 matmul peak measured in
the same run (the best of 5 measurements, on the same threads). The last column sums to how far the whole frame is above the roofline.
Torch uses its default threads (every core) unless ``--threads`` says otherwise; the
median of ``--frames`` frames counts, after one warm-up frame.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from codec import smooth_png  # noqa: E402  (a photo-like frame)
from pipeline import matmul_gflops  # noqa: E402

from maskfarm.core.outputs import write_file  # noqa: E402
from maskfarm.core.params import MaskParams  # noqa: E402
from maskfarm.core.prompts import as_prompt  # noqa: E402
from maskfarm.worker.encoding import encode_file  # noqa: E402
from maskfarm.worker.frames import decode_frame, to_rgb_uint8  # noqa: E402
from maskfarm.worker.pipeline import Segmenter, _masks_per_params  # noqa: E402
from maskfarm.worker.preprocess import pixel_values  # noqa: E402

PROMPTS = ["red car", "a tree", "the sky", "a person"]
VISION_PARTS = (
    "vision: patch + position embedding",
    "vision: layer norms",
    "vision: q/k/v/out projections",
    "vision: attention core (SDPA)",
    "vision: MLP fc1 + fc2",
    "vision: quick-GELU",
    "vision: residual adds, rest",
)
ROWS = (
    "read + decode PNG",
    "preprocess to 352x352",
    *VISION_PARTS,
    "text embedding (cached)",
    "decoder",
    "post-process (defaults)",
    "encode PNG8",
    "write file",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1024x1024", help="frame WIDTHxHEIGHT (default 1024x1024)")
    parser.add_argument("--prompts", type=int, default=1, choices=range(1, 5), help="prompts per frame (default 1)")
    parser.add_argument("--frames", type=int, default=5, help="timed frames; the median counts (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, every core)")
    parser.add_argument("--model-dir", default=".models/full", help="synthetic model (written if missing)")
    parser.add_argument("--model-preset", default="full", help="preset of a model written to --model-dir")
    parser.add_argument("--write-dir", default="/dev/shm", help="where the mask file is written (default /dev/shm)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    return parser.parse_args(argv)


class HookClock:
    """Inclusive time of every hooked module's forward calls in one frame, by module."""

    def __init__(self) -> None:
        self.seconds: dict[torch.nn.Module, float] = defaultdict(float)
        self._started: dict[torch.nn.Module, float] = {}
        self._handles: list = []

    def watch(self, module: torch.nn.Module) -> None:
        self._handles.append(module.register_forward_pre_hook(self._before))
        self._handles.append(module.register_forward_hook(self._after))

    def _before(self, module: torch.nn.Module, _inputs) -> None:
        self._started[module] = time.perf_counter()

    def _after(self, module: torch.nn.Module, _inputs, _output) -> None:
        self.seconds[module] += time.perf_counter() - self._started.pop(module)

    def reset(self) -> None:
        self.seconds.clear()

    def ms(self, *modules: torch.nn.Module) -> float:
        return 1000 * sum(self.seconds[module] for module in modules)


def watch_vision(clock: HookClock, vision: torch.nn.Module) -> None:
    clock.watch(vision)
    clock.watch(vision.embeddings)
    clock.watch(vision.pre_layrnorm)
    for layer in vision.encoder.layers:
        for module in (layer, layer.self_attn, layer.mlp, layer.mlp.fc1, layer.mlp.fc2, layer.layer_norm1):
            clock.watch(module)
        clock.watch(layer.layer_norm2)
        for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            clock.watch(projection)
        clock.watch(layer.self_attn.out_proj)


def vision_rows(clock: HookClock, vision: torch.nn.Module) -> dict[str, float]:
    """The vision tower's time split into ``VISION_PARTS`` (exclusive ms)."""
    layers = list(vision.encoder.layers)
    attention = [layer.self_attn for layer in layers]
    projections = [p for a in attention for p in (a.q_proj, a.k_proj, a.v_proj, a.out_proj)]
    linears = [m for layer in layers for m in (layer.mlp.fc1, layer.mlp.fc2)]
    norms = [n for layer in layers for n in (layer.layer_norm1, layer.layer_norm2)] + [vision.pre_layrnorm]
    mlps = [layer.mlp for layer in layers]
    parts = attention + mlps + [n for layer in layers for n in (layer.layer_norm1, layer.layer_norm2)]
    rest = clock.ms(*layers) - clock.ms(*parts)
    rest += clock.ms(vision) - clock.ms(vision.embeddings, vision.pre_layrnorm, *layers)
    return dict(
        zip(
            VISION_PARTS,
            (
                clock.ms(vision.embeddings),
                clock.ms(*norms),
                clock.ms(*projections),
                clock.ms(*attention) - clock.ms(*projections),
                clock.ms(*linears),
                clock.ms(*mlps) - clock.ms(*linears),
                rest,
            ),
        )
    )


def gflop(config, side: int, layers: int, prompts: int) -> dict[str, float]:
    """Matmul GFLOP per frame of each row (multiply-adds x 2), from the model's config and
    its input's ``side`` (352: the processor's size, not the config's 224)."""
    vision, reduce = config.vision_config, config.reduce_dim
    d, ff, patch = vision.hidden_size, vision.intermediate_size, vision.patch_size
    grid = side // patch
    tokens = grid * grid + 1
    decoder_layers = len(config.extract_layers)
    decoder = decoder_layers * (
        2 * tokens * d * reduce  # reduces
        + 4 * 2 * tokens * reduce * reduce
        + 2 * 2 * tokens * tokens * reduce
        + 2 * 2 * tokens * reduce * config.decoder_intermediate_size
    )
    decoder += 2 * grid * grid * reduce * reduce * 9  # 3x3 conv
    decoder += 2 * grid * grid * reduce * (reduce // 2) * 16  # first 4x4 transposed conv
    decoder += 2 * (grid * 4) ** 2 * (reduce // 2) * 16  # second
    flops = {
        "vision: patch + position embedding": 2 * grid * grid * 3 * patch * patch * d,
        "vision: q/k/v/out projections": layers * 4 * 2 * tokens * d * d,
        "vision: attention core (SDPA)": layers * 2 * 2 * tokens * tokens * d,
        "vision: MLP fc1 + fc2": layers * 2 * 2 * tokens * d * ff,
        "decoder": prompts * decoder,
    }
    return {name: flops.get(name, 0) / 1e9 for name in ROWS}


@contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[name] = into.get(name, 0.0) + 1000 * (time.perf_counter() - start)


def one_frame(segmenter: Segmenter, clock: HookClock, data: bytes, prompts: list[str], out: Path) -> dict[str, float]:
    """Every row's ms for one frame, through the same calls the pipeline makes."""
    model, params = segmenter._model, MaskParams()
    rows: dict[str, float] = {}
    clock.reset()
    with timed(rows, "read + decode PNG"):
        frame = to_rgb_uint8(decode_frame(data))
    with torch.inference_mode():
        with timed(rows, "preprocess to 352x352"):
            batch = pixel_values([frame], segmenter._spec, segmenter.loaded.device, segmenter.loaded.dtype)
        features = model.vision_features(batch)
        with timed(rows, "text embedding (cached)"):
            conditions = model.text_embeddings(prompts)
        with timed(rows, "decoder"):
            index = torch.zeros(len(prompts), dtype=torch.long)
            logits = model._decode(features, conditions, index, torch.arange(len(prompts)), segmenter.max_batch)
        with timed(rows, "post-process (defaults)"):
            small = _masks_per_params(logits, [params] * len(prompts))
            masks = Segmenter._frame_masks(small, tuple(frame.shape[:2]), [as_prompt(p) for p in prompts], params)
    rows.update(vision_rows(clock, model._vision))
    with timed(rows, "encode PNG8"):
        encoded = [encode_file(mask, "png") for mask in masks]
    with timed(rows, "write file"):
        for k, data in enumerate(encoded):
            write_file(out / f"{k}.png", data)
    return rows


def load_segmenter(model_dir: str, preset: str) -> Segmenter:
    if not (Path(model_dir) / "config.json").exists():
        from maskfarm.worker.synthetic import write_synthetic_model

        write_synthetic_model(model_dir, preset=preset)
    return Segmenter.load(model_dir, device="cpu", dtype="fp32")


def report(figures: dict) -> None:
    rows, flops, peak = figures["ms"], figures["gflop"], figures["matmul_fp32_gflops"]
    width = max(map(len, rows))
    print(f"{'stage, one frame':<{width}} {'ms':>8} {'share':>6} {'GFLOP':>7} {'GFLOP/s':>8} {'ms over roofline':>17}")
    for name, ms in rows.items():
        rate = f"{flops[name] / ms * 1000:8.1f}" if flops[name] else f"{'':>8}"
        over = ms - 1000 * flops[name] / peak
        print(
            f"{name:<{width}} {ms:8.1f} {100 * ms / figures['total_ms']:5.1f}% {flops[name]:7.2f} {rate} {over:17.1f}"
        )
    total_flop = sum(flops.values())
    roofline = 1000 * total_flop / peak
    print(
        f"{'total':<{width}} {figures['total_ms']:8.1f} 100.0% {total_flop:7.2f} "
        f"{total_flop / figures['total_ms'] * 1000:8.1f} {figures['total_ms'] - roofline:17.1f}"
    )
    print(
        f"fp32 matmul peak {peak:.1f} GFLOP/s: roofline {roofline:.1f} ms per frame; this frame is "
        f"{figures['total_ms'] / roofline:.2f}x it (the model alone, hooks on: {figures['model_ms']:.1f} ms, "
        f"{figures['model_ms'] / roofline:.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = load_segmenter(args.model_dir, args.model_preset)
    clock = HookClock()
    watch_vision(clock, segmenter._model._vision)
    width, height = map(int, args.size.lower().split("x"))
    data = smooth_png(np.random.default_rng(0), width, height)
    prompts = PROMPTS[: args.prompts]
    out = Path(tempfile.mkdtemp(prefix="maskfarm-model-profile-", dir=args.write_dir))
    try:
        runs = [one_frame(segmenter, clock, data, prompts, out) for _ in range(1 + args.frames)][1:]
    finally:
        for path in out.iterdir():
            path.unlink()
        out.rmdir()
    ms = {name: statistics.median(run[name] for run in runs) for name in ROWS}
    layers = len(segmenter._model._vision.encoder.layers)
    model_rows = [*VISION_PARTS, "text embedding (cached)", "decoder"]
    figures = {
        "size": args.size,
        "prompts": args.prompts,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ms": ms,
        "total_ms": sum(ms.values()),
        "model_ms": sum(ms[name] for name in model_rows),
        "gflop": gflop(segmenter.loaded.model.config, segmenter._spec.height, layers, args.prompts),
        "matmul_fp32_gflops": max(matmul_gflops(torch.float32, torch.device("cpu")) for _ in range(5)),
    }
    print(
        f"one {args.size} PNG frame, {args.prompts} prompt(s), fp32, {figures['threads']} torch threads, "
        f"torch {torch.__version__}, median of {args.frames}"
    )
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
