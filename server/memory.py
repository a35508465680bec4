"""Giving freed message buffers back to the operating system.

The server copies every streamed frame's masks through several buffers of the frame's
size (megabytes each). glibc serves such blocks with mmap and unmaps them when freed, but
after the first free it raises its mmap threshold to the size just freed (up to 32 MiB),
so later blocks come from its heaps, where freed memory stays with the process: after a
burst of streams the server keeps hundreds of MiB it no longer uses. Fixing the threshold
keeps every large block mmapped, so memory goes back as soon as a stream lets go of it
(bench/unread_watches.py: +328 MiB kept after 32 unread 2 MiB streams ended, +19 MiB with
the threshold fixed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number (malloc.h)."""
MMAP_THRESHOLD_BYTES = 256 * 1024
"""Blocks from this size on are mmapped, and unmapped when freed (glibc's initial value,
kept from rising)."""


def return_large_blocks_when_freed() -> bool:
    """Fixes glibc's mmap threshold at ``MMAP_THRESHOLD_BYTES``; False (and nothing
    changed) where the C library is not glibc. Call once, early."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in the C library (%s): large blocks are freed as it chooses", name)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
