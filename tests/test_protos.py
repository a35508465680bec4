"""The committed stubs in protos/maskfarm/v1 are those of segmentation.proto as it is now."""

from __future__ import annotations

import ast
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from maskfarm.core.jobs import ErrorCode, JobState, OutputFormat, Priority
from maskfarm.server import messages
from maskfarm.v1 import segmentation_pb2, segmentation_pb2_grpc

PROTOS = Path(__file__).resolve().parent.parent / "protos"
PROTO = "maskfarm/v1/segmentation.proto"


def fresh_descriptor(out: Path) -> descriptor_pb2.FileDescriptorProto:
    """Compiles the proto as scripts/gen_protos.sh does, into ``out``, and reads back the
    serialized descriptor that the generated module would register."""
    include = str(Path(protoc.__file__).parent / "_proto")
    status = protoc.main(["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", str(PROTOS / PROTO)])
    assert status == 0, "protoc failed on segmentation.proto"
    module = ast.parse((out / "maskfarm/v1/segmentation_pb2.py").read_text())
    for node in ast.walk(module):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(node.args[0]))
    raise AssertionError("no serialized descriptor in the generated module")


def test_committed_descriptor_matches_the_proto(tmp_path: Path) -> None:
    committed = descriptor_pb2.FileDescriptorProto.FromString(segmentation_pb2.DESCRIPTOR.serialized_pb)
    assert fresh_descriptor(tmp_path) == committed, "stale stubs: run scripts/gen_protos.sh"


def test_grpc_stubs_cover_every_rpc() -> None:
    service = segmentation_pb2.DESCRIPTOR.services_by_name["Segmentation"]
    for method in service.methods:
        assert callable(getattr(segmentation_pb2_grpc.SegmentationServicer, method.name)), method.name


def test_the_api_names_every_stored_state_code_format_and_priority() -> None:
    assert set(messages.JOB_STATES) == set(JobState)
    assert set(messages.OUTPUT_FORMATS) == set(OutputFormat)
    assert set(messages.PRIORITIES) == set(Priority)
    codes = {messages.error_code(code) for code in ErrorCode}
    assert codes == set(segmentation_pb2.ErrorCode.values()) - {segmentation_pb2.ERROR_CODE_UNSPECIFIED}
