"""Loading CLIPSeg: which weights, on which device, in which precision.

A model is named by a Hugging Face id (default ``CIDAS/clipseg-rd64-refined``) or a local
directory (``MASKFARM_MODEL``). A model that cannot be loaded raises one ``ModelLoadError``
whose message says how to point maskfarm at a local copy, so a worker fails at start, not
at its first job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor
from transformers.utils import logging as hf_logging

from maskfarm.worker.synthetic import is_synthetic

DEFAULT_MODEL = "CIDAS/clipseg-rd64-refined"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ModelLoadError(RuntimeError):
    """The configured model could not be loaded (missing, offline, or not a CLIPSeg model)."""


@dataclass(frozen=True)
class LoadedModel:
    """A CLIPSeg model and its processor, placed on ``device`` in ``dtype``, ready for inference."""

    model: CLIPSegForImageSegmentation
    processor: CLIPSegProcessor
    name: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype
    synthetic: bool

    @property
    def dtype_name(self) -> str:
        return next(name for name, dtype in DTYPES.items() if dtype == self.dtype)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for but CUDA is not available here")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``None`` means the fast default: bf16 on CUDA, fp32 (exact) elsewhere."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str | None = None) -> LoadedModel:
    """Load model and processor from a hub id or a local directory; raise ``ModelLoadError``."""
    hf_logging.disable_progress_bar()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    try:
        processor = CLIPSegProcessor.from_pretrained(name)
        model = CLIPSegForImageSegmentation.from_pretrained(name, dtype=torch_dtype)
    except Exception as error:  # from_pretrained raises OSError, ValueError, hub errors, ...
        raise ModelLoadError(_load_failure_message(name, error)) from error
    model = model.to(torch_device).eval()
    revision = getattr(model.config, "_commit_hash", None)
    synthetic = Path(name).is_dir() and is_synthetic(name)
    return LoadedModel(model, processor, name, revision, torch_device, torch_dtype, synthetic)


def _load_failure_message(name: str, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return (
        f"cannot load the CLIPSeg model {name!r}{offline}: {reason}\n"
        "Point maskfarm at a local copy with --model DIR or MASKFARM_MODEL=DIR, where DIR holds "
        "config.json, the weights and the processor files, e.g. made on a machine with internet by "
        f"`huggingface-cli download {DEFAULT_MODEL} --local-dir DIR`. "
        "For tests, `maskfarm model synthetic --preset tiny DIR` writes a random-weight stand-in."
    )
