"""Random-weight CLIPSeg models that maskfarm writes itself, for tests and benchmarks.

Real weights cannot be downloaded everywhere maskfarm is built (CI, air-gapped farms), yet
its parity and speed must be measured on the real architecture. A synthetic model is a
complete model directory (config, safetensors weights, image processor, tokenizer) that
``from_pretrained`` loads like any other. Its masks are meaningless; its shapes, cost and
numerical behaviour are those of the real model.

``full`` is the exact architecture of CIDAS/clipseg-rd64-refined (ViT-B/16 vision tower,
extract_layers [3, 6, 9], reduce_dim 64, complex transposed convolution, ~150M parameters);
``tiny`` keeps the same structure at a size that runs in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import pre_tokenizers
from transformers import (
    CLIPSegConfig,
    CLIPSegForImageSegmentation,
    CLIPSegProcessor,
    CLIPTokenizer,
    ViTImageProcessor,
)

PRESETS = ("full", "tiny")
NOTICE = "synthetic model with RANDOM weights: its masks are meaningless; use it only to test wiring, parity and speed"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIPSEG_SIZE = 352


def synthetic_config(preset: str) -> CLIPSegConfig:
    """The CLIPSeg configuration of a preset (see module docstring)."""
    if preset == "full":
        text = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12)
        vision = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
        decoder: dict[str, Any] = dict(
            projection_dim=512, reduce_dim=64, decoder_intermediate_size=2048, decoder_num_attention_heads=4
        )
    elif preset == "tiny":
        text = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2)
        vision = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=6)
        decoder = dict(projection_dim=16, reduce_dim=16, decoder_intermediate_size=32, decoder_num_attention_heads=2)
    else:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    vocab_size = len(_byte_level_vocab())
    text.update(
        vocab_size=vocab_size,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    vision.update(patch_size=16, image_size=224)
    extract_layers = [3, 6, 9] if preset == "full" else [1, 3, 4]
    return CLIPSegConfig(
        text_config=text,
        vision_config=vision,
        extract_layers=extract_layers,
        use_complex_transposed_convolution=True,
        conditional_layer=0,
        **decoder,
    )


def write_synthetic_model(directory: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write a loadable random-weight CLIPSeg model directory and return its path."""
    directory = Path(directory)
    config = synthetic_config(preset)
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(config).eval()
    processor = CLIPSegProcessor(image_processor=_image_processor(), tokenizer=_tokenizer())
    _calibrate_logits(model, processor)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    (directory / "SYNTHETIC.json").write_text(
        json.dumps({"preset": preset, "seed": seed, "notice": NOTICE}, indent=2) + "\n"
    )
    for path in directory.iterdir():
        # safetensors writes the weights owner-only; a worker running as another user (the
        # worker image's) must be able to read a model mounted into it.
        path.chmod(0o644)
    return directory


def _calibrate_logits(model: CLIPSegForImageSegmentation, processor: CLIPSegProcessor) -> None:
    """Rescale the last layer so logits have mean 0 and std 2 on a random frame.

    Random weights give logits in the hundreds: every mask would be all on or all off,
    and tests of thresholds, smoothing and dilation would test nothing.
    """
    frame = torch.randint(0, 256, (CLIPSEG_SIZE, CLIPSEG_SIZE, 3), dtype=torch.uint8).numpy()
    inputs = processor(text=["a photo"], images=[frame], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        scale = 2.0 / logits.std()
        last = model.decoder.transposed_convolution[-1]
        assert isinstance(last, torch.nn.ConvTranspose2d) and last.bias is not None  # the complex decoder's output
        last.weight.mul_(scale)
        last.bias.mul_(scale).sub_(logits.mean() * scale)


def is_synthetic(directory: str | Path) -> bool:
    return (Path(directory) / "SYNTHETIC.json").is_file()


def _image_processor() -> ViTImageProcessor:
    # CIDAS/clipseg-rd64-refined's preprocessor_config.json, value for value.
    return ViTImageProcessor(
        do_resize=True,
        size={"height": CLIPSEG_SIZE, "width": CLIPSEG_SIZE},
        resample=2,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def _byte_level_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary with no merges: every byte, alone or ending a word.

    Enough for any text to tokenize (one token per byte), which is all a random-weight
    model needs; the special tokens come last so the end-of-text id is the largest.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def _tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(vocab=_byte_level_vocab(), merges=[], model_max_length=77)
