"""maskfarm: text-prompted segmentation masks (CLIPSeg) as a service for render farms.

The packages, each importing only those below it (docs/ARCHITECTURE.md; checked by
tests/test_architecture.py):

- ``maskfarm.client``: the client library and the ``maskfarm`` commands that call the service;
- ``maskfarm.server``: the gRPC front end; ``maskfarm.worker``: the mask pipeline and RQ worker;
- ``maskfarm.jobqueue``: the Redis/RQ contract the server and the workers share;
- ``maskfarm.v1``: the API's messages (generated from protos/maskfarm/v1/segmentation.proto);
- ``maskfarm.core``: what a job, a mask and a frame file are, for all of them.

This top-level package holds only the ``maskfarm`` command (``maskfarm.cli``) and ``maskfarm up``
(``maskfarm.local_cluster``), which bring the parts together.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("maskfarm")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
