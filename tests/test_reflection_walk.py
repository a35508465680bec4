"""The path grpcurl takes, walked with grpcio-reflection's own client: no .proto, no stubs.

The server's reflection service gives the file descriptors; a DescriptorPool of their own
builds message classes from them; requests are written as JSON and sent through the
channel's generic call methods with the reflected types' serialisers. (That reflection
answers at all is tested in test_server_app.py.)
"""

from __future__ import annotations

import base64

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.images import encoded_image
from tests.services import ServerProcess

SEGMENTATION = "maskfarm.v1.Segmentation"


class ReflectedService:
    """A service as grpcurl sees it: methods and types from reflection, JSON in and out."""

    def __init__(self, channel: grpc.Channel, name: str) -> None:
        self.channel = channel
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        self.descriptor = self.pool.FindServiceByName(name)

    def call(self, method_name: str, request: dict) -> dict | list[dict]:
        """Calls the method with ``request`` (proto JSON); returns the reply as proto JSON,
        or the list of replies of a server stream."""
        method = self.descriptor.methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        generic_call = self.channel.unary_stream if method.server_streaming else self.channel.unary_unary
        invoke = generic_call(
            f"/{self.descriptor.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=reply_class.FromString,
        )
        reply = invoke(json_format.ParseDict(request, request_class()), timeout=10)
        if method.server_streaming:
            return [json_format.MessageToDict(event) for event in reply]
        return json_format.MessageToDict(reply)


def test_reflection_lists_the_segmentation_health_and_reflection_services(server: ServerProcess) -> None:
    with server.channel() as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {SEGMENTATION, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_every_method_and_its_message_types_resolve_from_reflection_alone(server: ServerProcess) -> None:
    with server.channel() as channel:
        service = ReflectedService(channel, SEGMENTATION)
        methods = {
            method.name: (method.input_type.full_name, method.output_type.full_name, method.server_streaming)
            for method in service.descriptor.methods
        }
        timestamp = service.pool.FindMessageTypeByName("maskfarm.v1.Job").fields_by_name["create_time"].message_type
    assert methods == {
        "SubmitJob": ("maskfarm.v1.SubmitJobRequest", "maskfarm.v1.Job", False),
        "GetJob": ("maskfarm.v1.GetJobRequest", "maskfarm.v1.GetJobResponse", False),
        "WatchJob": ("maskfarm.v1.WatchJobRequest", "maskfarm.v1.WatchJobEvent", True),
        "CancelJob": ("maskfarm.v1.CancelJobRequest", "maskfarm.v1.Job", False),
        "ListJobs": ("maskfarm.v1.ListJobsRequest", "maskfarm.v1.ListJobsResponse", False),
        "ListWorkers": ("maskfarm.v1.ListWorkersRequest", "maskfarm.v1.ListWorkersResponse", False),
    }
    assert timestamp.full_name == "google.protobuf.Timestamp"  # imports are fetched by reflection too


def test_a_job_submitted_read_cancelled_and_watched_with_reflected_types_only(server: ServerProcess) -> None:
    frame = base64.b64encode(encoded_image("PNG", (32, 24))).decode()
    with server.channel() as channel:
        service = ReflectedService(channel, SEGMENTATION)
        job = service.call(
            "SubmitJob",
            {
                "frames": [{"name": "shot.1001.png", "data": frame}],
                "prompts": ["red car"],
                "format": "OUTPUT_FORMAT_PNG16",
                "labels": {"shot": "sq010"},
            },
        )
        read = service.call("GetJob", {"job_id": job["id"]})
        cancelled = service.call("CancelJob", {"job_id": job["id"]})  # leave nothing queued in the shared namespace
        watched = service.call("WatchJob", {"job_id": job["id"]})

    assert job["state"] == "JOB_STATE_QUEUED"
    assert (job["prompts"], job["frameNames"], job["labels"]) == (["red car"], ["shot.1001.png"], {"shot": "sq010"})
    assert read["job"]["id"] == job["id"] and read["job"]["format"] == "OUTPUT_FORMAT_PNG16"
    assert read["job"]["params"]["threshold"] == 0.4 and read["job"]["params"]["smooth"] == 9  # defaults filled in
    assert cancelled["state"] == "JOB_STATE_CANCELLED"
    assert watched[-1]["job"]["state"] == "JOB_STATE_CANCELLED"
