#!/usr/bin/env bash
# Regenerates the Python stubs in protos/maskfarm/v1 from segmentation.proto.
# The generated files are committed; tests/test_protos.py checks they match the proto.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iprotos --python_out=protos --grpc_python_out=protos --pyi_out=protos \
    protos/maskfarm/v1/segmentation.proto
