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
