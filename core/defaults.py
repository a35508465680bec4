"""maskfarm's defaults, each defined once, for every part that has the setting.

The model a worker loads, the Redis that server, workers and ``maskfarm up`` use, where
the server listens and where clients look for it, and the namespace of maskfarm's Redis
keys and RQ queues (server and workers must agree on it).
"""

from __future__ import annotations

DEFAULT_MODEL = "CIDAS/clipseg-rd64-refined"
"""A Hugging Face id, or a local directory."""
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PORT = 50051
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
"""Where the server serves gRPC."""
DEFAULT_TARGET = f"localhost:{DEFAULT_PORT}"
"""Where a client looks for the server."""
DEFAULT_NAMESPACE = "maskfarm"

# What a frame may be, checked before it is decoded, the same on server and worker
# (maskfarm.core.frame_files.ImageLimits).
DEFAULT_MAX_SIDE = 16384
"""Largest frame side, pixels."""
DEFAULT_MAX_PIXELS = 100_000_000
"""Largest frame, pixels; also Pillow's bomb guard."""
DEFAULT_MAX_FRAME_MIB = 1024
"""Largest frame file read by path (or by ``--local``), MiB."""
DEFAULT_FRAME_READ_TIMEOUT_S = 30.0
"""Longest a frame file's open, checks and read may take."""
