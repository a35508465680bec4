"""Loading CLIPSeg: which weights, on which device, in which precision.

A model is named by a Hugging Face id (default ``CIDAS/clipseg-rd64-refined``) or a local
directory (``MASKFARM_MODEL``). A model that cannot be loaded raises one ``ModelLoadError``
whose message says how to point maskfarm at a local copy, so a worker fails at start, not
at its first job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor
from transformers.utils import logging as hf_logging

from maskfarm.core.defaults import DEFAULT_MODEL
from maskfarm.worker.synthetic import is_synthetic
from maskfarm.worker.weights import find_weights, load_failure_message

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_CPU_FLAGS = {
    torch.bfloat16: {"avx512_bf16", "amx_bf16", "bf16"},
    torch.float16: {"avx512_fp16", "amx_fp16", "fphp"},
}
"""``/proc/cpuinfo`` flags (x86 and Arm) of CPUs that do arithmetic in these dtypes in hardware."""

log = logging.getLogger(__name__)


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
    """Load model and processor from a hub id or a local directory; raise ``ModelLoadError``.

    The hub is asked first, with a bound (``maskfarm.worker.weights``): a hub that does not
    answer fails the load within seconds (or, with a cached copy, the cache is used alone)
    instead of letting transformers retry for minutes."""
    hf_logging.disable_progress_bar()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = find_weights(name)
    if source.problem:
        raise ModelLoadError(load_failure_message(name, source.problem))
    try:
        processor = CLIPSegProcessor.from_pretrained(name, local_files_only=source.local_only)
        model = CLIPSegForImageSegmentation.from_pretrained(name, dtype=torch_dtype, local_files_only=source.local_only)
    except Exception as error:  # from_pretrained raises OSError, ValueError, hub errors, ...
        raise ModelLoadError(load_failure_message(name, error)) from error
    model = model.to(torch_device).eval()  # type: ignore[arg-type]  # transformers' to() wrapper hides its signature
    if torch_device.type == "cpu" and cpu_computes_natively(torch_dtype) is False:
        log.warning(
            "this CPU has no %s instructions, so torch emulates them: expect %s to run many times "
            "slower than fp32, which is also exact (--dtype fp32)",
            torch_dtype,
            torch_dtype,
        )
    revision = getattr(model.config, "_commit_hash", None)
    synthetic = Path(name).is_dir() and is_synthetic(name)
    return LoadedModel(model, processor, name, revision, torch_device, torch_dtype, synthetic)


def cpu_computes_natively(dtype: torch.dtype, cpu_flags: set[str] | None = None) -> bool | None:
    """Whether this CPU does ``dtype`` arithmetic in hardware (fp32: always); None when that
    cannot be told (no ``/proc/cpuinfo``). Without it torch emulates the dtype: on an AVX2-only
    EPYC, bf16 matmuls ran at ~1 GFLOP/s against fp32's ~150, and the bf16 pipeline 7x slower
    than fp32. ``cpu_flags`` defaults to this machine's."""
    if dtype not in NATIVE_CPU_FLAGS:
        return True
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    return None if flags is None else bool(flags & NATIVE_CPU_FLAGS[dtype])


def _cpu_flags() -> set[str] | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    lines = [line for line in lines if line.startswith(("flags", "Features")) and ":" in line]
    return {flag for line in lines for flag in line.split(":", 1)[1].split()} if lines else None
