"""The mask pipeline against the node's semantics (tests/reference.py), on the tiny synthetic model.

Random weights amplify tiny input differences, so the two halves are checked separately:
preprocessing against the processor's pixel values, and (fed those same pixel values) the
masks against the per-frame reference.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from maskfarm.core.params import MaskParams
from maskfarm.worker import model as model_module
from maskfarm.worker.frames import to_rgb_uint8
from maskfarm.worker.inference import InPlaceQuickGELU, MaskModel
from maskfarm.worker.model import ModelLoadError, cpu_computes_natively, load_model
from maskfarm.worker.pipeline import Segmenter
from maskfarm.worker.preprocess import PixelSpec, pixel_values
from tests.reference import reference_logits, reference_masks, reference_rgb_uint8

SIZES = {"odd": (333, 517), "tall": (900, 120), "tiny": (17, 9), "large": (2048, 1152)}
PROMPTS = ["red car", "a tree", "sky"]


def make_frame(mode: str, size: tuple[int, int], seed: int = 0):
    """A smooth random frame (blobs, not noise) of ``size`` (width, height) in ``mode``."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, height // 16), max(2, width // 16), 3))
    smooth = np.asarray(
        torch.nn.functional.interpolate(
            torch.from_numpy(coarse).permute(2, 0, 1)[None], size=(height, width), mode="bilinear"
        )[0].permute(1, 2, 0)
    )
    rgb8 = (smooth * 255).astype(np.uint8)
    if mode == "float":
        return torch.from_numpy(smooth.astype(np.float32))
    if mode == "uint16-rgb":
        return (smooth * 65535).astype(np.uint16)
    if mode == "gray-array":
        return rgb8[..., 0]
    if mode == "rgba-array":
        return np.dstack([rgb8, rgb8[..., :1]])
    if mode == "I;16":
        return Image.fromarray((smooth[..., 0] * 65535).astype(np.uint16))
    image = Image.fromarray(rgb8)
    return image.quantize(64) if mode == "P" else image.convert(mode)


MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "float", "uint16-rgb", "gray-array", "rgba-array"]


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir) -> Segmenter:
    return Segmenter.load(str(tiny_model_dir), device="cpu", dtype="fp32", max_batch=4)


def grey_levels(ours: torch.Tensor, theirs: torch.Tensor, spec: PixelSpec) -> float:
    """Largest difference between two pixel-value tensors, in 8-bit grey levels."""
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return float(((ours - theirs).abs() * std * 255).max())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size_name", list(SIZES))
def test_frame_conversion_and_preprocessing_match_the_processor(processor, mode, size_name):
    frame = make_frame(mode, SIZES[size_name])
    ours_rgb = to_rgb_uint8(frame)
    reference_rgb = reference_rgb_uint8(frame)
    assert np.array_equal(ours_rgb.numpy(), reference_rgb)

    spec = PixelSpec.from_processor(processor)
    ours = pixel_values([ours_rgb], spec, torch.device("cpu"))
    theirs = processor(images=[reference_rgb], return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 352, 352)
    assert grey_levels(ours, theirs, spec) <= 1.0 + 1e-3


def test_preprocessing_matches_the_pil_processor_within_one_grey_level(processor):
    pil_backend = pytest.importorskip("transformers.models.vit.image_processing_pil_vit")
    image_processor = pil_backend.ViTImageProcessorPil(**processor.image_processor.to_dict())
    spec = PixelSpec.from_processor(processor)
    for size in SIZES.values():
        frame = reference_rgb_uint8(make_frame("RGB", size, seed=3))
        ours = pixel_values([torch.from_numpy(frame)], spec, torch.device("cpu"))
        theirs = torch.as_tensor(np.asarray(image_processor(images=[frame], return_tensors="np")["pixel_values"]))
        assert grey_levels(ours, theirs, spec) <= 1.0 + 1e-3


def test_float_batches_are_split_into_frames_like_comfyui_images(segmenter):
    batch = torch.stack([make_frame("float", (40, 30), seed) for seed in range(3)])
    assert batch.shape == (3, 30, 40, 3)
    masks = segmenter.segment(batch, "red car")
    assert [m.index for m in masks] == [0, 1, 2]
    assert all(m.masks.shape == (1, 30, 40) for m in masks)


@pytest.fixture(scope="module")
def parity_inputs(processor, plain_model):
    """Two frames of different sizes, their processor pixel values and the plain logits."""
    frames = [reference_rgb_uint8(make_frame("RGB", size, seed)) for seed, size in enumerate([(61, 37), (160, 270)])]
    batch = processor(images=frames, return_tensors="pt")["pixel_values"]
    logits = {
        prompt: [reference_logits(plain_model, processor, batch[i : i + 1], prompt) for i in range(len(frames))]
        for prompt in PROMPTS
    }
    return frames, batch, logits


GRID = list(itertools.product([0.3, 0.5], [0, 1, 9, 32], [-5, 0, 5], [0, 4, 64]))


@pytest.mark.parametrize("threshold,smooth,dilate,blur", GRID)
def test_masks_equal_the_per_frame_reference(segmenter, parity_inputs, threshold, smooth, dilate, blur):
    frames, batch, logits = parity_inputs
    params = MaskParams(threshold=threshold, smooth=smooth, dilate=dilate, blur=blur)
    sizes = [frame.shape[:2] for frame in frames]
    ours = list(segmenter.masks_from_pixel_values(batch, sizes, PROMPTS, params))
    for position, size in enumerate(sizes):
        for k, prompt in enumerate(PROMPTS):
            expected = reference_masks(logits[prompt][position][None], size, threshold, smooth, dilate, blur)[0]
            close = np.abs(ours[position][k] - expected.clamp(0, 1).numpy()) <= 1e-4
            assert close.mean() >= 0.9999, (position, prompt, close.mean())


def test_binary_masks_agree_before_resizing(segmenter, parity_inputs):
    """At 352x352, threshold + smooth + dilate give the same booleans on >= 99.99% of pixels."""
    from maskfarm.worker.masks import mask_from_logits

    _, batch, logits = parity_inputs
    for prompt in PROMPTS:
        stacked = torch.stack(logits[prompt])
        threshold = round(float(torch.sigmoid(stacked).median()), 3)  # half the pixels on
        expected = reference_masks(stacked, (352, 352), threshold, 9, 3, 0)
        ours = mask_from_logits(stacked, MaskParams(threshold=threshold, smooth=9, dilate=3))[:, 0]
        assert (ours == expected).float().mean() >= 0.9999
        assert 0.05 < float(ours.mean()) < 0.95, "the masks should not be trivially uniform"


def test_soft_masks_match_within_1e4(segmenter, parity_inputs):
    frames, batch, logits = parity_inputs
    sizes = [frame.shape[:2] for frame in frames]
    ours = list(segmenter.masks_from_pixel_values(batch, sizes, PROMPTS, MaskParams(soft=True)))
    for position, size in enumerate(sizes):
        for k, prompt in enumerate(PROMPTS):
            expected = reference_masks(logits[prompt][position][None], size, 0, 0, 0, 0, soft=True)[0]
            assert np.abs(ours[position][k] - expected.clamp(0, 1).numpy()).max() <= 1e-4


def test_resizing_to_a_large_frame_matches(segmenter, parity_inputs):
    _, batch, logits = parity_inputs
    size = (1152, 2048)
    (ours,) = segmenter.masks_from_pixel_values(batch[:1], [size], PROMPTS[:1], MaskParams(blur=4))
    expected = reference_masks(logits[PROMPTS[0]][0][None], size, 0.4, 9, 0, 4)[0].clamp(0, 1).numpy()
    assert ours.shape == (1, 1152, 2048)
    assert (np.abs(ours[0] - expected) <= 1e-4).mean() >= 0.9999


@pytest.mark.parametrize("shape", [(1, 485, 3072), (2, 130, 96), (3, 7, 5)])
def test_the_in_place_quick_gelu_gives_transformers_bits(shape) -> None:
    """Blocks of ``ROWS`` tokens, the last one short, computed in place: the same bits as
    transformers' quick-GELU on the whole tensor (485 x 3072: a 352x352 frame's block)."""
    from transformers.activations import QuickGELUActivation

    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    expected = QuickGELUActivation()(x)
    ours = x.clone()
    assert InPlaceQuickGELU()(ours) is ours
    assert torch.equal(ours, expected)


def test_truncated_vision_tower_and_cached_text_give_the_plain_logits(
    tiny_model_dir, plain_model, processor, parity_inputs
):
    _, batch, logits = parity_inputs
    model = MaskModel(load_model(str(tiny_model_dir), device="cpu", dtype="fp32"))
    vision_layers = model.loaded.model.clip.vision_model.encoder.layers
    assert len(vision_layers) == max(plain_model.extract_layers) + 1 < len(plain_model.clip.vision_model.encoder.layers)
    assert all(isinstance(layer.mlp.activation_fn, InPlaceQuickGELU) for layer in vision_layers)
    for position in range(batch.shape[0]):
        # Batches of one, as in the plain call, so not even float rounding may differ.
        ours = model.logits(batch[position : position + 1], PROMPTS, max_batch=1)
        for k, prompt in enumerate(PROMPTS):
            assert torch.equal(ours[k], logits[prompt][position])
    batched = model.logits(batch, PROMPTS, max_batch=4)  # every prompt now from the cache
    assert list(model._text_cache) == PROMPTS
    for position in range(batch.shape[0]):
        for k, prompt in enumerate(PROMPTS):
            torch.testing.assert_close(
                batched[position * len(PROMPTS) + k], logits[prompt][position], atol=1e-4, rtol=0
            )


def test_many_prompts_at_once_equal_one_prompt_at_a_time(segmenter):
    frames = [make_frame("RGB", (90, 50), seed) for seed in range(3)]
    params = MaskParams(dilate=2, blur=4)
    together = segmenter.segment(frames, PROMPTS, params)
    for k, prompt in enumerate(PROMPTS):
        alone = segmenter.segment(frames, [prompt], params)
        for both, single in zip(together, alone):
            assert np.abs(both.masks[k] - single.masks[0]).max() <= 1e-4


def test_chunking_does_not_change_masks(tiny_model_dir):
    frames = [make_frame("RGB", (64, 48), seed) for seed in range(5)]
    big = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=64).segment(frames, PROMPTS)
    small = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=1).segment(frames, PROMPTS)
    assert [m.index for m in small] == list(range(5))
    for a, b in zip(big, small):
        assert np.abs(a.masks - b.masks).max() <= 1e-4


def test_union_and_invert(segmenter):
    frame = make_frame("RGB", (80, 60))
    plain = segmenter.segment([frame], PROMPTS, MaskParams(blur=8))[0].masks
    union = segmenter.segment([frame], PROMPTS, MaskParams(blur=8, union=True))[0].masks
    inverted = segmenter.segment([frame], PROMPTS, MaskParams(blur=8, union=True, invert=True))[0].masks
    assert union.shape == (4, 60, 80)
    np.testing.assert_array_equal(union[3], plain.max(axis=0))
    np.testing.assert_allclose(inverted, 1 - union, atol=1e-7)
    assert plain.min() >= 0 and plain.max() <= 1


@pytest.mark.parametrize(
    "field,value",
    [
        ("threshold", 1.5),
        ("threshold", -0.1),
        ("threshold", float("nan")),
        ("smooth", 33),
        ("smooth", -1),
        ("dilate", 33),
        ("dilate", -33),
        ("blur", 65),
        ("blur", 2.5),
        ("soft", "yes"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        MaskParams(**{field: value})


@pytest.mark.parametrize("prompts", [[], [""], ["car", "   "]])
def test_bad_prompts_raise(segmenter, prompts):
    with pytest.raises(ValueError, match="prompts"):
        segmenter.segment([make_frame("RGB", (20, 20))], prompts)


def test_overlong_prompts_are_truncated_to_clip_tokens(segmenter):
    masks = segmenter.segment([make_frame("RGB", (20, 20))], ["car " * 500])
    assert masks[0].masks.shape == (1, 20, 20)


def test_unloadable_model_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(ModelLoadError, match="MASKFARM_MODEL"):
        load_model(str(tmp_path / "missing"), device="cpu")


def test_which_cpus_compute_in_bf16_and_fp16_natively():
    assert cpu_computes_natively(torch.float32, {"sse2"})
    assert cpu_computes_natively(torch.bfloat16, {"avx2", "avx512f", "avx512_bf16"})
    assert cpu_computes_natively(torch.bfloat16, {"fp", "asimd", "bf16"})  # Arm
    assert cpu_computes_natively(torch.bfloat16, {"avx2", "avx512f"}) is False
    assert cpu_computes_natively(torch.float16, {"avx2", "avx512_bf16"}) is False


@pytest.mark.parametrize("flags, warned", [({"avx2"}, True), ({"avx2", "amx_bf16"}, False), (None, False)])
def test_bf16_on_a_cpu_that_emulates_it_is_warned_about(tiny_model_dir, monkeypatch, caplog, flags, warned):
    monkeypatch.setattr(model_module, "_cpu_flags", lambda: flags)
    with caplog.at_level("WARNING", logger="maskfarm.worker.model"):
        load_model(str(tiny_model_dir), device="cpu", dtype="bf16")
    assert ("torch emulates them" in caplog.text) is warned


def test_bf16_masks_mostly_agree_with_fp32(tiny_model_dir):
    frames = [make_frame("RGB", (128, 96), seed) for seed in range(2)]
    fp32 = Segmenter.load(str(tiny_model_dir), device="cpu", dtype="fp32").segment(frames, PROMPTS)
    bf16 = Segmenter.load(str(tiny_model_dir), device="cpu", dtype="bf16").segment(frames, PROMPTS)
    agreement = np.mean([np.mean(np.abs(a.masks - b.masks) < 0.5) for a, b in zip(fp32, bf16)])
    assert agreement >= 0.95


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_masks_match_cpu(tiny_model_dir):
    frames = [make_frame("RGB", (128, 96), seed) for seed in range(2)]
    cpu = Segmenter.load(str(tiny_model_dir), device="cpu", dtype="fp32").segment(frames, PROMPTS)
    cuda = Segmenter.load(str(tiny_model_dir), device="cuda", dtype="fp32").segment(frames, PROMPTS)
    agreement = np.mean([np.mean(np.abs(a.masks - b.masks) < 1 / 255) for a, b in zip(cpu, cuda)])
    assert agreement >= 0.999


def test_out_of_memory_halves_the_batch_and_keeps_every_mask(tiny_model_dir, monkeypatch):
    """An injected CUDA out-of-memory error (on the CPU, batched as on a GPU: no frame
    threads) for batches over 2 pairs."""
    frames = [make_frame("RGB", (64, 48), seed) for seed in range(5)]
    expected = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=8).segment(frames, PROMPTS[:2])
    segmenter = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=8, frame_threads=1)
    real_logits = segmenter._model.logits
    sizes = []

    def logits_that_run_out_of_memory(batch, prompts, max_batch):
        pairs = min(max_batch, batch.shape[0] * len(prompts))
        sizes.append(pairs)
        if pairs > 2:
            raise torch.cuda.OutOfMemoryError("injected: CUDA out of memory")
        return real_logits(batch, prompts, max_batch)

    monkeypatch.setattr(segmenter._model, "logits", logits_that_run_out_of_memory)
    masks = segmenter.segment(frames, PROMPTS[:2])
    assert [m.index for m in masks] == [0, 1, 2, 3, 4]
    assert segmenter.max_batch == 2
    assert max(sizes) == 8 and sizes[-1] <= 2
    for got, want in zip(masks, expected):
        assert np.abs(got.masks - want.masks).max() <= 1e-4


def test_out_of_memory_at_one_pair_is_raised(tiny_model_dir, monkeypatch):
    segmenter = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=4)

    def always_out_of_memory(batch, prompts, max_batch):
        raise torch.cuda.OutOfMemoryError("injected: CUDA out of memory")

    monkeypatch.setattr(segmenter._model, "logits", always_out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        segmenter.segment([make_frame("RGB", (20, 20))], PROMPTS)
    assert segmenter.max_batch == 1


def test_compiled_vision_tower_gives_the_same_masks(tiny_model_dir):
    frames = [make_frame("RGB", (70, 40), seed) for seed in range(3)]
    eager = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=2).segment(frames, PROMPTS[:1])
    compiled = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=2, compile=True)
    assert type(compiled._model._vision).__name__ == "OptimizedModule"
    for got, want in zip(compiled.segment(frames, PROMPTS[:1]), eager):  # batches of 2, then 1
        assert np.abs(got.masks - want.masks).max() <= 1e-3


def test_frame_threads_run_each_frame_alone_on_its_share_of_the_cores(tiny_model_dir, monkeypatch):
    """With frame threads, a chunk's frames go through the model one per call, on the frame
    threads, each on its share of torch's threads (a chunk of one frame: in the calling
    thread, on all of them); the masks are the batched ones (every frame its own prompts
    and parameters, as the worker's batches have them)."""
    import threading

    from maskfarm.worker.pipeline import FrameRequest

    torch_threads = torch.get_num_threads()
    frames = [make_frame("RGB", (64 + 8 * seed, 48), seed) for seed in range(5)]
    requests = [
        FrameRequest(frame, PROMPTS[: 1 + seed % 3], MaskParams(dilate=seed % 2, blur=2 * (seed % 3), union=seed == 4))
        for seed, frame in enumerate(frames)
    ]
    batched = list(
        Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=8, frame_threads=1).stream_requests(requests)
    )
    calls = []
    vision_features = MaskModel.vision_features
    monkeypatch.setattr(
        MaskModel,
        "vision_features",
        lambda self, values: (
            calls.append((values.shape[0], threading.current_thread().name, torch.get_num_threads()))
            or vision_features(self, values)
        ),
    )
    side_by_side = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=8, frame_threads=2)
    assert side_by_side.frame_threads == 2
    outputs = list(side_by_side.stream_requests(requests))
    share = max(1, torch_threads // 2)
    # 1 + 2 + 3 + 1 pairs fill the first chunk of 8; the fifth frame's 2 start another.
    # The one-frame chunk runs as it is read, while the first chunk is still in the model.
    assert sorted((c[0], c[1].startswith("maskfarm-frame"), c[2]) for c in calls) == sorted(
        [(1, True, share)] * 4 + [(1, False, torch_threads)]
    )
    assert torch.get_num_threads() == torch_threads, "the calling thread keeps its own count"
    assert [o.index for o in outputs] == [b.index for b in batched] == list(range(5))
    assert [o.chunk_end for o in outputs] == [b.chunk_end for b in batched]
    for ours, theirs in zip(outputs, batched):
        assert ours.masks.shape == theirs.masks.shape
        assert np.abs(ours.masks - theirs.masks).max() <= 1e-4


@pytest.mark.parametrize("ahead", [True, False], ids=["stream_pending", "stream"])
def test_frames_left_over_by_the_frame_threads_run_on_every_core_only_when_nothing_follows(
    tiny_model_dir, monkeypatch, ahead
):
    """9 frames in chunks of 3 on 2 frame threads. ``stream_pending`` (the next
    chunk begun before one is given out): each chunk's odd frame joins the frame threads
    while more follow, and only the very last runs alone, on every core. ``stream`` (each
    chunk done before the next starts): every chunk's odd frame runs on every core after
    the others, so no core idles while one thread makes it."""
    import threading

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        segmenter = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=3, frame_threads=2)
        frames = [make_frame("RGB", (48, 40), seed) for seed in range(9)]
        calls = []
        vision_features = MaskModel.vision_features

        def recorded(model: MaskModel, values: torch.Tensor) -> list[torch.Tensor]:
            on_frame_thread = threading.current_thread().name.startswith("maskfarm-frame")
            calls.append((values.shape[0], on_frame_thread, torch.get_num_threads()))
            return vision_features(model, values)

        monkeypatch.setattr(MaskModel, "vision_features", recorded)
        if ahead:
            masks = [pending.finish() for pending in segmenter.stream_pending(frames, PROMPTS[:1])]
        else:
            masks = [output.masks for output in segmenter.stream(frames, PROMPTS[:1])]
    finally:
        torch.set_num_threads(torch_threads)
    alone = 1 if ahead else 3
    assert sorted(calls) == sorted([(1, True, 1)] * (9 - alone) + [(1, False, 2)] * alone)
    batched = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=8, frame_threads=1)
    for ours, theirs in zip(masks, batched.segment(frames, PROMPTS[:1]), strict=True):
        assert np.abs(ours - theirs.masks).max() <= 1e-4


def test_frame_threads_default_to_a_frame_per_core_on_a_cpu(tiny_model_dir):
    default = Segmenter.load(str(tiny_model_dir), device="cpu")
    assert default.frame_threads == torch.get_num_threads()
    assert default.max_batch == max(8, default.frame_threads)
    with pytest.raises(ValueError, match="frame threads"):
        Segmenter.load(str(tiny_model_dir), device="cpu", frame_threads=0)
