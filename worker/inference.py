"""CLIPSeg logits for many (frame, prompt) pairs, with no work done twice.

The plain model call computes the vision tower once per pair and the text tower once per
pair. Here, exactly the same logits come from:

- the vision tower once per frame, its features reused for every prompt of the frame;
- the vision tower stopped after the last layer the decoder reads (extract_layers [3, 6, 9]
  use 10 of 12 blocks; the rest only feeds the pooled output, which the logits ignore);
- each prompt's text embedding computed once and cached (a shot reuses its prompts);
- the decoder, the only per-pair part (~2% of a pass), in batches of ``max_batch`` pairs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

from maskfarm.worker.model import LoadedModel

CLIP_MAX_TOKENS = 77


class MaskModel:
    """The model half of the pipeline: pixel values and prompts in, logits out."""

    def __init__(self, loaded: LoadedModel, text_cache_size: int = 1024) -> None:
        self.loaded = loaded
        self._model = loaded.model
        self._extract_layers = list(self._model.extract_layers)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size
        _drop_unread_vision_layers(self._model)
        self._vision = self._model.clip.vision_model

    def compile(self) -> None:
        """Compile the vision tower with torch.compile (inductor, weights frozen as constants).

        An option, not the default: each new batch shape class costs ~15-20 s of compiling
        on a 2-core CPU (then it is reused), which pays off in a long-running worker, not in
        a one-off ``segment --local``. Logits then match the eager ones up to float rounding.
        """
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        self._vision = torch.compile(self._vision)

    @torch.inference_mode()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """(P, projection_dim) conditional embeddings, one prompt at a time so none is padded.

        Prompts longer than CLIP's 77 tokens are truncated (the plain call would fail).
        """
        missing = [prompt for prompt in dict.fromkeys(prompts) if prompt not in self._text_cache]
        for prompt in missing:
            tokens = self.loaded.processor.tokenizer(
                [prompt], truncation=True, max_length=CLIP_MAX_TOKENS, return_tensors="pt"
            ).to(self.loaded.device)
            embedding = self._model.get_conditional_embeddings(
                batch_size=1, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
            self._text_cache[prompt] = embedding[0]
            if len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        for prompt in prompts:
            self._text_cache.move_to_end(prompt)
        return torch.stack([self._text_cache[prompt] for prompt in prompts])

    @torch.inference_mode()
    def vision_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The hidden states the decoder reads, one (F, tokens, hidden) tensor per extract layer."""
        outputs = self._vision(pixel_values=pixel_values, output_hidden_states=True)
        return [outputs.hidden_states[layer + 1] for layer in self._extract_layers]

    @torch.inference_mode()
    def logits(self, pixel_values: torch.Tensor, prompts: Sequence[str], max_batch: int) -> torch.Tensor:
        """Logits (F * P, H, W) for every frame with every prompt, frame-major."""
        features = self.vision_features(pixel_values)
        conditions = self.text_embeddings(prompts)
        frames, count = pixel_values.shape[0], len(prompts)
        pairs = frames * count
        chunks = []
        for start in range(0, pairs, max_batch):
            index = torch.arange(start, min(start + max_batch, pairs), device=pixel_values.device)
            frame_index, prompt_index = index // count, index % count
            chunk_features = [feature.index_select(0, frame_index) for feature in features]
            chunk_conditions = conditions.index_select(0, prompt_index)
            chunks.append(self._model.decoder(chunk_features, chunk_conditions).logits)
        return torch.cat(chunks)


def _drop_unread_vision_layers(model: torch.nn.Module) -> None:
    encoder = model.clip.vision_model.encoder
    keep = max(model.extract_layers) + 1
    if len(encoder.layers) > keep:
        encoder.layers = encoder.layers[:keep]
