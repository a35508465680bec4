"""The maskfarm.v1 API: gRPC stubs generated from ``segmentation.proto``, and ``prompt_messages``.

Regenerate the stubs with ``scripts/gen_protos.sh``; never edit the ``*_pb2*`` files by hand.
``prompt_messages`` (hand-written) turns maskfarm.core's ``Prompt`` into the API's message and
back, for client and server alike.
"""
