"""Whether a model's weights can be had here, answered in seconds and without torch.

Asking the hub on a machine without network makes transformers retry for minutes before it
fails; the demo, ``maskfarm up`` and every model load want to know at once. So the hub is
asked one bounded question first, and a model is loaded from the hub only when it answered.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from maskfarm.core.defaults import DEFAULT_MODEL

PROBE_TIMEOUT_S = 5.0
ANSWER_KEPT_S = 60.0


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from, as far as a quick look can tell."""

    problem: str | None
    """Why the weights cannot be had here; None when they probably can."""
    local_only: bool
    """Load without asking the hub: a local folder, or a cached copy while the hub does not answer."""


_answers: dict[str, tuple[float, str | None]] = {}
"""The hub's last answer per URL: (when, why it did not answer, or None)."""


def find_weights(name: str, timeout: float = PROBE_TIMEOUT_S) -> WeightsSource:
    """Looks for ``name`` (a local model folder or a Hugging Face id), bounded by ``timeout``.

    A local folder must hold config.json. A hub id is available from the Hugging Face cache,
    or from the hub when it answers an HTTP request within ``timeout``.
    """
    path = Path(name)
    if path.is_dir():
        missing = None if (path / "config.json").is_file() else f"{name} has no config.json"
        return WeightsSource(missing, local_only=True)
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if path.exists():
        return WeightsSource(f"{name} is a file, not a model folder (one holding config.json)", local_only=True)
    try:
        validate_repo_id(name)
    except HFValidationError:
        return WeightsSource(
            f"no such folder: {name} (and it is not a Hugging Face id such as owner/model)", local_only=True
        )
    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if os.environ.get("HF_HUB_OFFLINE"):
        problem = None if cached else f"{name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        return WeightsSource(problem, local_only=True)
    silent = _recent_hub_answer(f"{constants.ENDPOINT.rstrip('/')}/api/models/{name}", timeout)
    if silent is None:
        return WeightsSource(None, local_only=False)
    return WeightsSource(None if cached else f"{name} is not in the Hugging Face cache and {silent}", local_only=True)


def weights_unavailable(name: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``name`` cannot be loaded here, or None when it probably can; bounded by ``timeout``."""
    return find_weights(name, timeout).problem


def unloadable_model_message(name: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """The whole message for a model that cannot be loaded here (why, and how to point at a
    local copy), or None when it probably can. Commands ask this before importing torch, which
    alone takes seconds, so that they fail within seconds."""
    reason = weights_unavailable(name, timeout)
    return load_failure_message(name, reason) if reason else None


def hub_unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub behind ``url`` did not answer within ``timeout`` (name lookup included), or
    None when it gave any HTTP answer (an error status is an answer: the hub is there)."""
    hub = "{0.scheme}://{0.netloc}".format(urlparse(url))
    with ThreadPoolExecutor(max_workers=1) as pool:
        probe = pool.submit(_head, url, timeout)
        try:
            probe.result(timeout=timeout)
        except urllib.error.HTTPError:
            return None
        except FutureTimeout:
            return f"the Hugging Face hub at {hub} did not answer within {timeout:g} s"
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error or "no answer"
            return f"the Hugging Face hub at {hub} cannot be reached: {reason}"
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return None


def _recent_hub_answer(url: str, timeout: float) -> str | None:
    """``hub_unreachable(url)``, asked at most once per ``ANSWER_KEPT_S`` in this process: a
    command asks before it imports torch, and the model load then asks again."""
    asked_at, answer = _answers.get(url, (-ANSWER_KEPT_S, None))
    if time.monotonic() - asked_at >= ANSWER_KEPT_S:
        answer = hub_unreachable(url, timeout)
        _answers[url] = (time.monotonic(), answer)
    return answer


def _head(url: str, timeout: float) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
        pass


def load_failure_message(name: str, error: Exception | str) -> str:
    """Why ``name`` could not be loaded, and how to point maskfarm at a local copy instead."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") and "HF_HUB_OFFLINE" not in reason else ""
    return (
        f"cannot load the CLIPSeg model {name!r}{offline}: {reason}\n"
        "Point maskfarm at a local copy with --model DIR or MASKFARM_MODEL=DIR, where DIR holds "
        "config.json, the weights and the processor files, e.g. made on a machine with internet by "
        f"`hf download {DEFAULT_MODEL} --local-dir DIR` (`hf` comes with huggingface_hub). "
        "For tests, `maskfarm model synthetic --preset tiny DIR` writes a random-weight stand-in."
    )
