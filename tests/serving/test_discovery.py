"""What a client can learn without our generated stubs: services through server reflection (and a
Generate call built from the reflected descriptors alone), versions through AdminService."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.serving.conftest import SwapVersions
from tests.serving_process import ServingProcess
from trimtab.v1 import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.integration


def test_reflection_lists_the_services_and_suffices_to_call_generate(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"trimtab.v1.InferenceService", "trimtab.v1.AdminService", "grpc.health.v1.Health"} <= services

    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("trimtab.v1.InferenceService").FindMethodByName("Generate")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = json_format.ParseDict(
        {"prompt": {"text": "Hello!"}, "userId": "reflection-client", "sampling": {"maxTokens": 8}}, request_class()
    )
    call = channel.unary_unary(
        "/trimtab.v1.InferenceService/Generate",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    reply = json_format.MessageToDict(call(request, timeout=60))
    assert reply["candidates"][0]["responseId"].startswith("resp_")


def test_admin_lists_versions_newest_first_with_states_and_pages(
    serving: ServingProcess, versions: SwapVersions
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(serving.address))
    listed = stub.ListVersions(admin_pb2.ListVersionsRequest(page_size=100)).versions
    ids = [v.version_id for v in listed]
    assert ids == sorted(ids, reverse=True) and versions.initial in ids and versions.lora in ids
    by_id = {v.version_id: v for v in listed}
    current = stub.GetStatus(admin_pb2.GetStatusRequest()).status.current_version_id
    assert by_id[current].state == admin_pb2.VERSION_STATE_CURRENT
    assert by_id[versions.lora].kind == admin_pb2.VERSION_KIND_LORA
    assert by_id[versions.lora].base_version_id == versions.initial

    first = stub.ListVersions(admin_pb2.ListVersionsRequest(page_size=2))
    second = stub.ListVersions(admin_pb2.ListVersionsRequest(page_size=2, page_token=first.next_page_token))
    assert [v.version_id for v in (*first.versions, *second.versions)] == ids[:4]

    shown = stub.GetVersion(admin_pb2.GetVersionRequest(version_id=versions.full))
    assert shown.version.parent_version_id == versions.initial and '"algorithm":"test-noise"' in shown.manifest_json
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetVersion(admin_pb2.GetVersionRequest(version_id="ver_nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
