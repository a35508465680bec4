#!/usr/bin/env bash
# Regenerates the Python stubs in protos/maskfarm/v1 from segmentation.proto.
#
# The generator is pinned to grpcio-tools 1.66.2 (protobuf 5.27 gencode): the stubs then
# run on any grpcio >= 1.66.2 and protobuf >= 5.27.2, old enough for the Pythons that
# Maya, Houdini and Nuke ship with. It runs in a throwaway venv so the project's own stays
# as it is. The generated files are committed; tests/test_protos.py checks their
# descriptor against a fresh compile of the proto.
set -euo pipefail
cd "$(dirname "$0")/.."
generator_venv="$(mktemp -d)"
trap 'rm -rf "$generator_venv"' EXIT
python3 -m venv "$generator_venv"
"$generator_venv/bin/python" -m pip install --quiet "grpcio-tools==1.66.2"
"$generator_venv/bin/python" -m grpc_tools.protoc -Iprotos --python_out=protos --grpc_python_out=protos --pyi_out=protos \
    protos/maskfarm/v1/segmentation.proto
