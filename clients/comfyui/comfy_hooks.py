"""ComfyUI's progress bar and Cancel button, used when the node runs inside ComfyUI.

Both come from ComfyUI's own ``comfy`` package, imported only when the node runs and
only if present: outside ComfyUI (tests, scripts) the node runs without them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

INTERRUPT_POLL_S = 0.5
"""How often a running job checks whether the user pressed Cancel in ComfyUI."""


class Progress:
    """ComfyUI's progress bar over a job's frames; does nothing without ComfyUI."""

    def __init__(self, total: int) -> None:
        try:
            from comfy.utils import ProgressBar
        except ImportError:
            self._bar: Any = None
        else:
            self._bar = ProgressBar(total)
        self.total = total

    def show(self, done: int) -> None:
        """Shows ``done`` of ``total`` frames finished."""
        if self._bar is not None:
            self._bar.update_absolute(done, self.total)


class CancelOnInterrupt:
    """While open, calls ``cancel`` once when the user interrupts ComfyUI's queue, so the
    farm stops the job; ``raise_if_interrupted`` then raises ComfyUI's own interruption.
    Does nothing without ComfyUI."""

    def __init__(self, cancel: Callable[[], object]) -> None:
        try:
            import comfy.model_management as model_management
        except ImportError:
            model_management = None
        self._comfy = model_management
        self._cancel = cancel
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="maskfarm-interrupt", daemon=True)

    def __enter__(self) -> CancelOnInterrupt:
        if self._comfy is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def raise_if_interrupted(self) -> None:
        if self._comfy is not None:
            self._comfy.throw_exception_if_processing_interrupted()

    def _poll(self) -> None:
        while not self._done.wait(INTERRUPT_POLL_S):
            if self._comfy.processing_interrupted():
                self._cancel()
                return
