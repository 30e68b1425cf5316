"""The checked-in descriptor is the proto compiled, and speaks the protocol Triton's client speaks."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2

from app.grpc.open_inference import generate
from app.grpc.open_inference.descriptor import FILE_DESCRIPTOR
from app.grpc.open_inference.messages import POOL, SERVICE


def test_descriptor_module_matches_the_proto() -> None:
    expected = generate.module_text(generate.compiled_descriptor())
    assert generate.TARGET.read_text() == expected, (
        "run `python -m app.grpc.open_inference.generate` after editing the proto"
    )


def test_every_field_is_the_protocols() -> None:
    """Same messages, field numbers and types as Triton's superset of the protocol, so both
    clients' bytes mean the same here."""
    ours = descriptor_pb2.FileDescriptorProto.FromString(FILE_DESCRIPTOR)
    theirs = descriptor_pb2.FileDescriptorProto.FromString(service_pb2.DESCRIPTOR.serialized_pb)
    their_messages = {m.name: m for m in theirs.message_type}

    def compare(mine: Any, other: Any, path: str) -> None:
        their_fields = {f.name: f for f in other.field}
        for field in mine.field:
            assert field.name in their_fields, f"{path}.{field.name}"
            match = their_fields[field.name]
            assert (field.number, field.type, field.label) == (match.number, match.type, match.label), path
        their_nested = {n.name: n for n in other.nested_type}
        for nested in mine.nested_type:
            compare(nested, their_nested[nested.name], f"{path}.{nested.name}")

    for message in ours.message_type:
        compare(message, their_messages[message.name], message.name)
    their_service = {m.name: m for m in theirs.service[0].method}
    for method in ours.service[0].method:
        assert method.input_type == their_service[method.name].input_type
        assert method.output_type == their_service[method.name].output_type


@pytest.mark.parametrize(
    "name", ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"]
)
def test_service_has_the_six_rpcs(name: str) -> None:
    assert POOL.FindServiceByName(SERVICE).FindMethodByName(name) is not None
