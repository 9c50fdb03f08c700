"""The OpenAPI document is derived from the proto: every field of the bodies is in it, typed as the JSON mapping."""

from __future__ import annotations

import json

import jsonschema
import pytest
from google.protobuf import json_format

from feedback.openapi import SUBMIT_PATH, document
from trimtab.v1 import feedback_pb2


def test_request_and_response_schemas_cover_every_proto_field() -> None:
    schemas = document()["components"]["schemas"]
    for message in (feedback_pb2.SubmitRequest, feedback_pb2.SubmitResponse, feedback_pb2.FeedbackLabel,
                    feedback_pb2.Pairwise):  # fmt: skip
        descriptor = message.DESCRIPTOR
        properties = schemas[descriptor.full_name]["properties"]
        names = {field.name for field in descriptor.fields} | {field.json_name for field in descriptor.fields}
        assert set(properties) == names, descriptor.full_name
        assert schemas[descriptor.full_name]["additionalProperties"] is False


def test_a_body_with_either_spelling_of_the_field_names_is_valid_and_an_unknown_field_is_not() -> None:
    schema = {"$ref": "#/components/schemas/trimtab.v1.SubmitRequest", "components": document()["components"]}
    request = feedback_pb2.SubmitRequest(feedback_id="f1", user_id="u1", response_id="resp_1")
    request.label.correction = "Better."
    camel = json_format.MessageToDict(request)  # what protobuf's own JSON writer sends
    assert "feedbackId" in camel
    jsonschema.validate(camel, schema)
    jsonschema.validate(json_format.MessageToDict(request, preserving_proto_field_name=True), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(camel | {"colour": "red"}, schema)


def test_field_types_follow_the_proto3_json_mapping() -> None:
    schemas = document()["components"]["schemas"]
    response = schemas["trimtab.v1.SubmitResponse"]["properties"]
    assert response["offset"]["type"] == ["string", "integer"]  # int64 is a string in proto3 JSON
    assert response["partition"] == {"type": "integer", "format": "int32"}
    assert response["replayed"] == {"type": "boolean"}
    labels = schemas["trimtab.v1.FeedbackLabel"]
    assert labels["properties"]["thumb"]["enum"] == ["THUMB_UNSPECIFIED", "THUMB_UP", "THUMB_DOWN"]
    assert labels["properties"]["attributes"] == {"$ref": "#/components/schemas/trimtab.v1.SteerLMAttributes"}
    assert "kind: one of thumb, pairwise, rating, attributes, correction, comment" in labels["description"]
    assert "trimtab.v1.SteerLMAttributes" in schemas


def test_submit_documents_every_status_and_retry_after() -> None:
    operation = document()["paths"][SUBMIT_PATH]["post"]
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "409", "413", "429", "503"}
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    refs = json.dumps(document())
    for ref in set(part.split('"')[0] for part in refs.split("#/components/schemas/")[1:]):
        assert ref in document()["components"]["schemas"], f"dangling $ref {ref}"
