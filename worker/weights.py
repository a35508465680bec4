"""Whether a model's weights can be had here, answered in seconds and without torch.

Asking the hub on a machine without network takes ~30 s of retries before it fails; the
demo and the worker's start-up want to know at once.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from urllib.parse import urlparse


def weights_unavailable(name: str, timeout: float = 5.0) -> str | None:
    """Why ``name`` cannot be loaded here, or None when it probably can; bounded by ``timeout``.

    A local directory or a copy in the Hugging Face cache is available; otherwise the hub
    must answer a TCP connect within ``timeout``.
    """
    if Path(name).is_dir():
        return None if (Path(name) / "config.json").is_file() else f"{name} has no config.json"
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return None
    if os.environ.get("HF_HUB_OFFLINE"):
        return f"{name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    with ThreadPoolExecutor(max_workers=1) as pool:
        probe = pool.submit(socket.create_connection, (host, 443), timeout)
        try:
            probe.result(timeout=timeout).close()
        except (OSError, FutureTimeout) as error:
            return f"the Hugging Face hub ({host}) cannot be reached: {error or 'timed out'}"
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return None
