"""Generated gRPC stubs for the maskfarm.v1 API (``segmentation.proto``).

Regenerate with ``scripts/gen_protos.sh``; never edit the ``*_pb2*`` files by hand.
"""
