"""The protocol's message classes, built from the checked-in descriptor in a pool of their own.

A pool of their own, not protobuf's default one: Triton's client registers the same `inference.*`
names there from its own file, and a process holding both (a test run, a pipeline that also
calls Triton) would otherwise fail on the duplicate symbols.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from app.grpc.open_inference.descriptor import FILE_DESCRIPTOR

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

POOL = descriptor_pool.DescriptorPool()
POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(FILE_DESCRIPTOR))


def message(name: str) -> Any:
    """The class of message `inference.<name>` (e.g. `ModelInferRequest`)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


def methods() -> dict[str, tuple[Any, Any]]:
    """Each RPC of the service by name, with its request and response classes."""
    service = POOL.FindServiceByName(SERVICE)
    return {
        method.name: (
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
        )
        for method in service.methods
    }


def method_path(name: str) -> str:
    """The HTTP/2 path a call of RPC `name` goes to, e.g. `/inference.GRPCInferenceService/ModelInfer`."""
    return f"/{SERVICE}/{name}"


ModelInferRequest = message("ModelInferRequest")
ModelInferResponse = message("ModelInferResponse")
