"""CLIPSeg logits for many (frame, prompt) pairs, with no work done twice.

The plain model call computes the vision tower once per pair and the text tower once per
pair. Here, exactly the same logits come from:

- the vision tower once per frame, its features reused for every prompt of the frame;
- the vision tower stopped after the last layer the decoder reads (extract_layers [3, 6, 9]
  use 10 of 12 blocks; the rest only feeds the pooled output, which the logits ignore);
- each prompt's text embedding computed once and cached (a shot reuses its prompts), and
  so each image prompt's (CLIPSeg's visual prompt: the exemplar through the vision tower);
- the decoder, the only per-pair part (~2% of a pass), in batches of ``max_batch`` pairs;
- the vision MLPs' quick-GELU, ``x * sigmoid(1.702 x)``, computed in one new tensor
  instead of three (the same operations, so the same bits).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from transformers import CLIPSegForImageSegmentation

from maskfarm.core.prompts import Exemplar
from maskfarm.worker.frames import decode_frame, to_rgb_uint8
from maskfarm.worker.model import LoadedModel
from maskfarm.worker.preprocess import PixelSpec, pixel_values

Condition = str | Exemplar
"""What the decoder is conditioned on: a text prompt, or an exemplar image (its bytes)."""

CLIP_MAX_TOKENS = 77


class MaskModel:
    """The model half of the pipeline: pixel values and prompts in, logits out."""

    def __init__(self, loaded: LoadedModel, text_cache_size: int = 1024) -> None:
        self.loaded = loaded
        self._model = loaded.model
        self._extract_layers = list(self._model.extract_layers)
        self._text_cache: OrderedDict[str | bytes, torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._text_cache_lock = threading.Lock()
        self._all_vision_layers = _drop_unread_vision_layers(self._model)
        _quick_gelu_in_place(self._all_vision_layers)
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
    def text_embeddings(self, prompts: Sequence[Condition]) -> torch.Tensor:
        """(P, projection_dim) conditional embeddings, one prompt at a time so none is padded.

        Prompts longer than CLIP's 77 tokens are truncated (the plain call would fail). An
        ``Exemplar`` (its ``data`` set) is embedded as the model's conditional pixel values:
        the image as frames are read, through the processor's preprocessing; the cache keeps
        its digest, not its bytes. Safe from several threads (``Segmenter``'s frame threads).
        """
        keys = [_cache_key(prompt) for prompt in prompts]
        with self._text_cache_lock:
            for key, prompt in dict(zip(keys, prompts)).items():
                if key not in self._text_cache:
                    self._text_cache[key] = self._embedding(prompt)
                    if len(self._text_cache) > self._text_cache_size:
                        self._text_cache.popitem(last=False)
            for key in keys:
                self._text_cache.move_to_end(key)
            return torch.stack([self._text_cache[key] for key in keys])

    def _embedding(self, condition: Condition) -> torch.Tensor:
        if isinstance(condition, Exemplar):
            image = to_rgb_uint8(decode_frame(condition.data))
            spec = PixelSpec.from_processor(self.loaded.processor)
            values = pixel_values([image], spec, self.loaded.device, self.loaded.dtype)
            with self._whole_vision_tower():
                return self._model.get_conditional_embeddings(batch_size=1, conditional_pixel_values=values)[0]
        tokens = self.loaded.processor.tokenizer(
            [condition], truncation=True, max_length=CLIP_MAX_TOKENS, return_tensors="pt"
        ).to(self.loaded.device)
        embedding = self._model.get_conditional_embeddings(
            batch_size=1, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
        return embedding[0]

    @contextlib.contextmanager
    def _whole_vision_tower(self) -> Iterator[None]:
        """Every vision layer back for a while: an exemplar's embedding is the pooled output,
        which reads the layers the decoder does not."""
        encoder = self._model.clip.vision_model.encoder
        kept, encoder.layers = encoder.layers, self._all_vision_layers
        try:
            yield
        finally:
            encoder.layers = kept

    @torch.inference_mode()
    def vision_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The hidden states the decoder reads, one (F, tokens, hidden) tensor per extract layer."""
        outputs = self._vision(pixel_values=pixel_values, output_hidden_states=True)
        return [outputs.hidden_states[layer + 1] for layer in self._extract_layers]

    @torch.inference_mode()
    def logits(self, pixel_values: torch.Tensor, prompts: Sequence[Condition], max_batch: int) -> torch.Tensor:
        """Logits (F * P, H, W) for every frame with every prompt, frame-major."""
        frames, count = pixel_values.shape[0], len(prompts)
        pairs = torch.arange(frames * count, device=pixel_values.device)
        return self._decode(
            self.vision_features(pixel_values), self.text_embeddings(prompts), pairs // count, pairs % count, max_batch
        )

    @torch.inference_mode()
    def pair_logits(
        self, pixel_values: torch.Tensor, frame_index: Sequence[int], prompts: Sequence[Condition], max_batch: int
    ) -> torch.Tensor:
        """Logits (N, H, W) for N (frame, prompt) pairs: pair n is frame ``frame_index[n]``
        of ``pixel_values`` with ``prompts[n]``, so frames may each have their own prompts.
        Still one vision pass per frame and one text embedding per distinct prompt."""
        distinct = list(dict.fromkeys(prompts))
        position = {prompt: k for k, prompt in enumerate(distinct)}
        device = pixel_values.device
        return self._decode(
            self.vision_features(pixel_values),
            self.text_embeddings(distinct),
            torch.tensor(list(frame_index), dtype=torch.long, device=device),
            torch.tensor([position[prompt] for prompt in prompts], dtype=torch.long, device=device),
            max_batch,
        )

    def _decode(
        self,
        features: list[torch.Tensor],
        conditions: torch.Tensor,
        frame_index: torch.Tensor,
        condition_index: torch.Tensor,
        max_batch: int,
    ) -> torch.Tensor:
        """The decoder over the pairs (frame_index[n], condition_index[n]), ``max_batch`` at a time."""
        chunks = []
        for start in range(0, frame_index.shape[0], max_batch):
            frames, conds = frame_index[start : start + max_batch], condition_index[start : start + max_batch]
            chunk_features = [feature.index_select(0, frames) for feature in features]
            chunks.append(self._model.decoder(chunk_features, conditions.index_select(0, conds)).logits)
        return torch.cat(chunks)


def _cache_key(condition: Condition) -> str | bytes:
    """A text is its own key; an exemplar is keyed by its file's SHA-256 (bytes, never a str)."""
    return hashlib.sha256(condition.data).digest() if isinstance(condition, Exemplar) else condition


class InPlaceQuickGELU(torch.nn.Module):
    """CLIP's quick-GELU, ``x * sigmoid(1.702 x)``, as transformers computes it (the same
    operations, the same bits) but in place, a block of ``ROWS`` tokens at a time: on a CPU
    a vision block's activation (~485 x 3072 values a frame, 6 MB) costs more in
    allocations and memory traffic than in arithmetic, and a block's 768 KB stays in a
    core's cache through its three passes. Inference only: it overwrites its input, the
    MLP's ``fc1`` output, which nothing else reads."""

    ROWS = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.view(-1, x.shape[-1])
        scratch = torch.empty((min(self.ROWS, rows.shape[0]), rows.shape[1]), dtype=x.dtype, device=x.device)
        for start in range(0, rows.shape[0], self.ROWS):
            block = rows[start : start + self.ROWS]
            gate = scratch[: block.shape[0]]
            torch.mul(block, 1.702, out=gate)
            gate.sigmoid_()
            block.mul_(gate)
        return x


def _quick_gelu_in_place(layers: torch.nn.ModuleList) -> None:
    """Gives the vision layers' MLPs ``InPlaceQuickGELU`` where they use quick-GELU."""
    from transformers.activations import QuickGELUActivation

    for layer in layers:
        mlp = layer.mlp
        if isinstance(mlp, torch.nn.Module) and isinstance(mlp.activation_fn, QuickGELUActivation):
            mlp.activation_fn = InPlaceQuickGELU()


def _drop_unread_vision_layers(model: CLIPSegForImageSegmentation) -> torch.nn.ModuleList:
    """Drops the vision layers after the last one the decoder reads; returns them all."""
    encoder = model.clip.vision_model.encoder
    every = encoder.layers
    keep = max(model.extract_layers) + 1
    if len(encoder.layers) > keep:
        encoder.layers = encoder.layers[:keep]
    return every
