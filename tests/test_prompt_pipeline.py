"""Prompts beyond one phrase in the mask pipeline, against tests/reference.py on the tiny model:
negatives (the positive's mask minus the negatives' maximum, clamped) and per-prompt
parameters, fed the processor's own pixel values as the parity tests are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskfarm.core.params import MaskParams
from maskfarm.core.prompts import Prompt
from maskfarm.worker.pipeline import Segmenter
from tests.reference import reference_logits, reference_masks, reference_rgb_uint8
from tests.test_pipeline import make_frame

PROMPTS = ["person", "shadow", "sky", "car"]


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir) -> Segmenter:
    return Segmenter.load(str(tiny_model_dir), device="cpu", dtype="fp32", max_batch=3)


@pytest.fixture(scope="module")
def inputs(processor, plain_model):
    """Two frames, their processor pixel values and the plain model's logits per prompt."""
    frames = [reference_rgb_uint8(make_frame("RGB", size, seed)) for seed, size in enumerate([(61, 37), (160, 270)])]
    batch = processor(images=frames, return_tensors="pt")["pixel_values"]
    logits = {
        prompt: [reference_logits(plain_model, processor, batch[i : i + 1], prompt) for i in range(len(frames))]
        for prompt in PROMPTS
    }
    return frames, batch, logits


def reference(logits, size, params: MaskParams) -> np.ndarray:
    mask = reference_masks(
        logits[None], size, params.threshold, params.smooth, params.dilate, params.blur, soft=params.soft
    )[0]
    return mask.clamp(0, 1).numpy()


def assert_close(ours: np.ndarray, expected: np.ndarray) -> None:
    close = np.abs(ours - expected) <= 1e-4
    assert close.mean() >= 0.9999, close.mean()


def median_probability(logits, prompt: str, offset: float = 0.0) -> float:
    """A threshold near the median of a prompt's probabilities (plus ``offset``) that no
    pixel's probability is close to: the middle of the widest gap between neighbouring
    values within 0.01 of it. A threshold equal to some pixel's value (the median itself)
    flips that pixel on float rounding alone, which differs between CPUs' kernels."""
    values = torch.sigmoid(torch.stack(logits[prompt])).flatten().double().sort().values
    target = float(values.median()) + offset
    near = values[(values - target).abs() <= 0.01]
    gaps = near[1:] - near[:-1]
    widest = int(gaps.argmax())
    return float((near[widest] + near[widest + 1]) / 2)


@pytest.mark.parametrize("soft", [False, True])
def test_a_negative_is_subtracted_from_its_prompt(segmenter, inputs, soft):
    frames, batch, logits = inputs
    params = MaskParams(threshold=median_probability(logits, "person"), smooth=0, blur=4, soft=soft)
    sizes = [frame.shape[:2] for frame in frames]
    prompts = [Prompt("person", negatives=("shadow",)), "sky"]
    ours = segmenter.masks_from_pixel_values(batch, sizes, prompts, params)
    for position, size in enumerate(sizes):
        person = reference(logits["person"][position], size, params)
        shadow = reference(logits["shadow"][position], size, params)
        expected = np.clip(person - shadow, 0, 1)
        assert np.abs(expected - person).max() > 0.1, "the negative changes nothing: a weak test"
        assert ours[position].shape == (2, *size)
        assert_close(ours[position][0], expected)
        assert_close(ours[position][1], reference(logits["sky"][position], size, params))


def test_several_negatives_subtract_their_union(segmenter, inputs):
    frames, batch, logits = inputs
    params = MaskParams(threshold=median_probability(logits, "person"), smooth=0)
    sizes = [frame.shape[:2] for frame in frames]
    ours = segmenter.masks_from_pixel_values(batch, sizes, [Prompt("person", negatives=("shadow", "car"))], params)
    for position, size in enumerate(sizes):
        negatives = np.maximum(
            reference(logits["shadow"][position], size, params), reference(logits["car"][position], size, params)
        )
        assert_close(ours[position][0], np.clip(reference(logits["person"][position], size, params) - negatives, 0, 1))


def test_each_prompt_takes_its_own_threshold(segmenter, inputs):
    frames, batch, logits = inputs
    job = MaskParams(smooth=1, dilate=1)
    low, high = (median_probability(logits, "sky", -0.02), median_probability(logits, "car", 0.02))
    sizes = [frame.shape[:2] for frame in frames]
    prompts = [Prompt("sky", threshold=low), Prompt("car", threshold=high, blur=6), "person"]
    ours = segmenter.masks_from_pixel_values(batch, sizes, prompts, job)
    for position, size in enumerate(sizes):
        sky = reference(logits["sky"][position], size, MaskParams(threshold=low, smooth=1, dilate=1))
        car = reference(logits["car"][position], size, MaskParams(threshold=high, smooth=1, dilate=1, blur=6))
        assert_close(ours[position][0], sky)
        assert_close(ours[position][1], car)
        assert_close(ours[position][2], reference(logits["person"][position], size, job))
        assert np.abs(sky - reference(logits["sky"][position], size, job)).max() > 0.5, "same as the job's threshold"


def test_negatives_through_the_whole_pipeline_and_in_chunks(segmenter, tiny_model_dir):
    """Decoded frames, chunked (3 conditions a chunk here): the same as the plain prompts subtracted."""
    frames = [make_frame("RGB", (64, 48), seed) for seed in range(3)]
    params = MaskParams(threshold=0.5, smooth=0, soft=True, union=True)
    plain = segmenter.segment(frames, ["person", "shadow", "sky"], params)
    ours = segmenter.segment(frames, [Prompt("person", negatives=("shadow",)), "sky"], params)
    for both, single in zip(ours, plain):
        person = np.clip(single.masks[0] - single.masks[1], 0, 1)
        np.testing.assert_allclose(both.masks[0], person, atol=1e-5)
        np.testing.assert_allclose(both.masks[1], single.masks[2], atol=1e-5)
        np.testing.assert_allclose(both.masks[2], np.maximum(person, single.masks[2]), atol=1e-5)


@pytest.mark.parametrize(
    "prompt,field", [(Prompt("car", negatives=("",)), r"prompts\[0\]\.negatives\[0\]"), (Prompt(" "), r"prompts\[0\]")]
)
def test_bad_negatives_raise_naming_them(segmenter, prompt, field):
    with pytest.raises(ValueError, match=field):
        segmenter.segment([make_frame("RGB", (20, 20))], [prompt])


def test_an_override_out_of_range_names_the_parameter():
    with pytest.raises(ValueError, match="threshold"):
        Prompt("sky", threshold=2.0).params(MaskParams())


def test_an_image_prompt_equals_the_model_called_with_conditional_pixel_values(
    segmenter, inputs, plain_model, processor
):
    """CLIPSegForImageSegmentation(pixel_values=frame, conditional_pixel_values=exemplar), then the node's steps."""
    import io

    from PIL import Image

    from maskfarm.core.prompts import Exemplar
    from maskfarm.worker.preprocess import PixelSpec, pixel_values

    frames, batch, _ = inputs
    exemplar = reference_rgb_uint8(make_frame("RGB", (50, 40), seed=7))
    encoded = io.BytesIO()
    Image.fromarray(exemplar).save(encoded, format="PNG")
    conditional = pixel_values(
        [torch.from_numpy(exemplar)], PixelSpec.from_processor(processor), torch.device("cpu"), torch.float32
    )
    with torch.no_grad():
        exemplars = conditional.expand(len(frames), -1, -1, -1)
        logits = plain_model(pixel_values=batch, conditional_pixel_values=exemplars).logits
    threshold = float(torch.sigmoid(logits).median())
    params = MaskParams(threshold=threshold, smooth=3)
    sizes = [frame.shape[:2] for frame in frames]
    prompt = Prompt(image=Exemplar(encoded.getvalue(), name="red-car.png"))
    assert prompt.name == "red-car"
    ours = segmenter.masks_from_pixel_values(batch, sizes, [prompt, "sky"], params)
    for position, size in enumerate(sizes):
        expected = reference(logits[position], size, params)
        assert 0 < expected.mean() < 1
        assert_close(ours[position][0], expected)


@pytest.mark.parametrize(("frame_threads", "expected"), [(1, [2, 2]), (2, [1, 1, 1, 1])])
def test_negatives_and_an_exemplar_cost_no_second_vision_pass_over_the_frames(
    tiny_model_dir, monkeypatch, frame_threads, expected
):
    """One vision pass over each frame, whatever the negatives: per chunk (batched) or per
    frame (frame threads); the exemplar is embedded once."""
    import io

    from PIL import Image

    from maskfarm.core.prompts import Exemplar
    from maskfarm.worker.inference import MaskModel

    encoded = io.BytesIO()
    Image.fromarray(reference_rgb_uint8(make_frame("RGB", (30, 30), seed=3))).save(encoded, format="PNG")
    prompts = [
        Prompt("person", negatives=("shadow", "car")),
        Prompt(image=Exemplar(encoded.getvalue()), negatives=("sky",)),
    ]
    passes, embedded = [], []
    vision_features, embedding = MaskModel.vision_features, MaskModel._embedding
    monkeypatch.setattr(
        MaskModel,
        "vision_features",
        lambda self, values: passes.append(values.shape[0]) or vision_features(self, values),
    )
    monkeypatch.setattr(
        MaskModel, "_embedding", lambda self, condition: embedded.append(condition) or embedding(self, condition)
    )
    segmenter = Segmenter.load(str(tiny_model_dir), device="cpu", max_batch=10, frame_threads=frame_threads)
    masks = segmenter.segment([make_frame("RGB", (40, 30), seed) for seed in range(4)], prompts)
    assert [m.masks.shape for m in masks] == [(2, 30, 40)] * 4
    assert passes == expected, "one pass over each chunk's or frame's frames (5 conditions a frame, 10 a chunk)"
    assert sum(isinstance(condition, Exemplar) for condition in embedded) == 1
