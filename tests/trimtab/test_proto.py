"""The wire schema: generated code is fresh, services offer their RPCs, messages survive the wire.

One schema serves the gRPC services and the Kafka topics, so every event must come back unchanged
through protobuf binary (Kafka record values) and through protobuf's JSON mapping (the HTTP API and
human-readable dumps).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, json_format, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimtab import protogen

try:
    from trimtab.v1 import (
        admin_pb2,
        admin_pb2_grpc,
        common_pb2,
        events_pb2,
        feedback_pb2,
        feedback_pb2_grpc,
        inference_pb2,
        inference_pb2_grpc,
        reward_pb2,
        reward_pb2_grpc,
    )
except ImportError as missing:
    pytest.fail(f"generated code is missing ({missing}): run `make proto`", pytrace=False)

GENERATED_DIR = protogen.REPO_ROOT / "trimtab" / "v1"
RUN_MAKE_PROTO = "the generated code in trimtab/v1 is stale: run `make proto`"


# --- (a) generated code is what the .proto files produce ---------------------------------------


def test_generated_code_is_byte_identical_to_a_fresh_generation(tmp_path: Path) -> None:
    fresh = {path.name: path.read_bytes() for path in protogen.generate(tmp_path)}
    in_repo = {path.name: path.read_bytes() for path in protogen.generated_files(GENERATED_DIR)}

    assert sorted(in_repo) == sorted(fresh), f"{RUN_MAKE_PROTO} (the set of files differs)"
    changed = sorted(name for name in fresh if in_repo[name] != fresh[name])
    assert not changed, f"{RUN_MAKE_PROTO} (changed: {', '.join(changed)})"


def test_a_broken_schema_is_reported_with_protocs_message(tmp_path: Path) -> None:
    proto_root = tmp_path / "proto"
    (proto_root / "trimtab" / "v1").mkdir(parents=True)
    (proto_root / "trimtab" / "v1" / "broken.proto").write_text(
        'syntax = "proto3";\npackage trimtab.v1;\nmessage Broken { strng name = 1; }\n'
    )

    with pytest.raises(protogen.ProtocError, match='"strng" is not defined'):
        protogen.generate(tmp_path / "out", proto_root)


# --- (b) each service offers exactly the expected RPCs -----------------------------------------

# service -> {rpc: (request message, response message, server-streaming?)}
EXPECTED_RPCS: dict[str, dict[str, tuple[str, str, bool]]] = {
    "InferenceService": {
        "Generate": ("GenerateRequest", "GenerateResponse", False),
        "GenerateStream": ("GenerateRequest", "GenerateStreamResponse", True),
    },
    "FeedbackService": {
        "Submit": ("SubmitRequest", "SubmitResponse", False),
        "SubmitBatch": ("SubmitBatchRequest", "SubmitBatchResponse", False),
    },
    "AdminService": {
        "ListVersions": ("ListVersionsRequest", "ListVersionsResponse", False),
        "GetVersion": ("GetVersionRequest", "GetVersionResponse", False),
        "SetCanary": ("SetCanaryRequest", "SetCanaryResponse", False),
        "Promote": ("PromoteRequest", "PromoteResponse", False),
        "Rollback": ("RollbackRequest", "RollbackResponse", False),
        "GetStatus": ("GetStatusRequest", "GetStatusResponse", False),
    },
    "RewardService": {"Score": ("ScoreRequest", "ScoreResponse", False)},
}
SERVICE_MODULES: dict[str, tuple[ModuleType, ModuleType]] = {
    "InferenceService": (inference_pb2, inference_pb2_grpc),
    "FeedbackService": (feedback_pb2, feedback_pb2_grpc),
    "AdminService": (admin_pb2, admin_pb2_grpc),
    "RewardService": (reward_pb2, reward_pb2_grpc),
}


@pytest.mark.parametrize("service_name", sorted(EXPECTED_RPCS))
def test_service_offers_the_expected_rpcs(service_name: str) -> None:
    messages_module, grpc_module = SERVICE_MODULES[service_name]
    service = messages_module.DESCRIPTOR.services_by_name[service_name]

    rpcs = {
        method.name: (method.input_type.name, method.output_type.name, method.server_streaming)
        for method in service.methods
    }
    assert rpcs == EXPECTED_RPCS[service_name]
    assert not any(method.client_streaming for method in service.methods)
    assert service.full_name == f"trimtab.v1.{service_name}"
    for generated in (f"{service_name}Stub", f"{service_name}Servicer"):
        assert hasattr(grpc_module, generated), f"{grpc_module.__name__} lacks {generated}"
    assert hasattr(grpc_module, f"add_{service_name}Servicer_to_server")


# --- (c) every event survives Kafka (binary) and the HTTP API (JSON) ---------------------------


def assert_round_trips(original: Message) -> None:
    """Binary and JSON encodings both decode to a message equal to the original."""
    message_class = type(original)
    assert message_class.FromString(original.SerializeToString()) == original
    as_json = json_format.MessageToJson(original)
    assert json_format.Parse(as_json, message_class()) == original, as_json


def real_oneofs(descriptor: Descriptor) -> list[Any]:
    """The message's oneofs, without the synthetic ones that proto3 `optional` fields create."""
    as_proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(as_proto)
    optional = {field.name for field in as_proto.field if field.proto3_optional}
    return [oneof for oneof in descriptor.oneofs if optional.isdisjoint(f.name for f in oneof.fields)]


def unset_fields(message: Message, path: str = "") -> set[str]:
    """Fields left unset (or at their default) anywhere in `message`, as dotted paths.

    Oneof members that were not chosen don't count; a field inside a repeated message counts as
    set if any element sets it.
    """
    present = {field.name: value for field, value in message.ListFields()}
    not_chosen = {
        field.name
        for oneof in real_oneofs(message.DESCRIPTOR)
        for field in oneof.fields
        if message.WhichOneof(oneof.name) != field.name
    }
    missing: set[str] = set()
    for field in message.DESCRIPTOR.fields:
        if field.name in not_chosen:
            continue
        if field.name not in present:
            missing.add(f"{path}{field.name}")
        elif is_plain_message(field):
            values = present[field.name] if field.is_repeated else [present[field.name]]
            missing |= set.intersection(*(unset_fields(v, f"{path}{field.name}.") for v in values))
    return missing


def is_plain_message(field: FieldDescriptor) -> bool:
    """A field holding one of our messages (not a scalar, a map, or a well-known type)."""
    message_type = field.message_type
    return (
        message_type is not None
        and not message_type.GetOptions().map_entry
        and not message_type.full_name.startswith("google.protobuf.")
    )


def at(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=1_795_000_000 + seconds, nanos=250_000_000)


def example_candidate(index: int) -> events_pb2.CandidateRecord:
    """A candidate that a hot swap split between two versions after its second token."""
    return events_pb2.CandidateRecord(
        reply=inference_pb2.Candidate(
            index=index,
            response_id=f"01JDX3ZQ4M-{index}",
            text=" Four.",
            model_version="v0007",
            version_spans=[
                inference_pb2.VersionSpan(version_id="v0007", token_start=0, token_end=2),
                inference_pb2.VersionSpan(version_id="v0008", token_start=2, token_end=3),
            ],
            prompt_tokens=12,
            completion_tokens=3,
            finish_reason=inference_pb2.FINISH_REASON_STOP,
            guardrails=[
                common_pb2.GuardrailDecision(
                    rail="pii",
                    stage=common_pb2.RAIL_STAGE_INPUT,
                    action=common_pb2.GUARDRAIL_ACTION_MODIFY,
                    reason_code="pii.email",
                    score=0.0,
                )
            ],
        ),
        token_ids=[412, 7, 2],
        token_logprobs=[-0.25, -1.5, -0.125],
    )


def example_response_logged() -> events_pb2.ResponseLogged:
    return events_pb2.ResponseLogged(
        request_id="01JDX3ZQ4M",
        tenant="acme",
        user_id="user-17",
        prompt=common_pb2.Prompt(
            chat=common_pb2.Chat(
                messages=[
                    common_pb2.ChatMessage(role="system", content="Be brief."),
                    common_pb2.ChatMessage(role="user", content="2+2? Mail me at [EMAIL]"),
                ]
            )
        ),
        prompt_token_ids=[1, 88, 301, 9],
        sampling=common_pb2.SamplingParams(temperature=0.0, top_p=1.0, top_k=0, max_tokens=64, stop=["\n\n"], seed=0),
        steer_targets=common_pb2.SteerLMAttributes(
            helpfulness=4, correctness=4, coherence=4, complexity=1, verbosity=0, toxicity=0
        ),
        candidates=[example_candidate(0), example_candidate(1)],
        received_at=at(0),
        completed_at=at(1),
        trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )


FEEDBACK_LABELS: dict[str, feedback_pb2.FeedbackLabel] = {
    "thumb": feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_DOWN),
    "pairwise": feedback_pb2.FeedbackLabel(
        pairwise=feedback_pb2.Pairwise(chosen_response_id="01JDX3ZQ4M-1", rejected_response_id="01JDX3ZQ4M-0", tie=True)
    ),
    "rating": feedback_pb2.FeedbackLabel(rating=5),
    "attributes": feedback_pb2.FeedbackLabel(
        attributes=common_pb2.SteerLMAttributes(
            helpfulness=3, correctness=0, coherence=4, complexity=2, verbosity=1, toxicity=0
        )
    ),
    "correction": feedback_pb2.FeedbackLabel(correction="4"),
    "comment": feedback_pb2.FeedbackLabel(comment="right, but rude"),
}


def example_feedback_event(kind: str) -> events_pb2.FeedbackEvent:
    return events_pb2.FeedbackEvent(
        event_id=f"01JDX41B2C-{kind}",
        feedback_id="c0ffee-42",
        user_id="user-17",
        response_id="01JDX3ZQ4M-0",
        label=FEEDBACK_LABELS[kind],
        supersedes="c0ffee-41",
        abuse=events_pb2.AbuseSignals(user_flagged=True, agreement_score=0.0, over_training_cap=True, weight=0.0),
        accepted_at=at(30),
        served=example_response_logged(),
        guardrails=events_pb2.GuardrailSignals(
            violating_response_ids=["01JDX3ZQ4M-0"], reason_codes=["pii.email", "secret.leak"]
        ),
    )


def example_version_events() -> list[events_pb2.VersionEvent]:
    """A canary decision with its numbers, then a LoRA swap that applied and one that failed."""
    version: dict[str, Any] = {
        "version_id": "v0008",
        "parent_version_id": "v0007",
        "kind": admin_pb2.VERSION_KIND_LORA,
        "version_created_at": at(35),
    }
    swap: dict[str, Any] = {"replica": "serving-0", "from_version_id": "v0007", "to_version_id": "v0008"}
    return [
        events_pb2.VersionEvent(
            event_id="01JDX5AA00",
            type=events_pb2.VERSION_EVENT_TYPE_CANARY,
            reason="passed gates: reward +0.4, kl 2.1 <= 10",
            actor="learner",
            metrics={"kl_nats_per_seq": 2.125, "gold_reward": 1.0},
            canary_share=0.1,
            occurred_at=at(36),
            **version,
        ),
        events_pb2.VersionEvent(
            event_id="01JDX5AA01",
            type=events_pb2.VERSION_EVENT_TYPE_SWAP_APPLIED,
            actor="serving",
            swap=admin_pb2.SwapRecord(
                pause_mode=admin_pb2.PAUSE_MODE_KEEP,
                stall_ms=82.5,
                ok=True,
                started_at=at(40),
                finished_at=at(41),
                **swap,
            ),
            occurred_at=at(41),
            **version,
        ),
        events_pb2.VersionEvent(
            event_id="01JDX5AA02",
            type=events_pb2.VERSION_EVENT_TYPE_SWAP_FAILED,
            reason="checksum mismatch: adapter_model.safetensors",
            actor="serving",
            swap=admin_pb2.SwapRecord(
                pause_mode=admin_pb2.PAUSE_MODE_NONE,
                ok=False,
                error="checksum mismatch",
                started_at=at(40),
                finished_at=at(40),
                **swap,
            ),
            occurred_at=at(40),
            **version,
        ),
    ]


# Each event message's examples: realistic, and together they set every field.
EXAMPLE_EVENTS: dict[str, list[Message]] = {
    "ResponseLogged": [example_response_logged()],
    "FeedbackEvent": [example_feedback_event(kind) for kind in FEEDBACK_LABELS],
    "VersionEvent": example_version_events(),
}


def test_the_examples_cover_every_event_message_and_feedback_kind() -> None:
    event_messages = {
        name for name, desc in events_pb2.DESCRIPTOR.message_types_by_name.items() if name.endswith(("Logged", "Event"))
    }
    assert event_messages == {"ResponseLogged", "FeedbackEvent", "VersionEvent"}
    kinds = {field.name for field in feedback_pb2.FeedbackLabel.DESCRIPTOR.oneofs_by_name["kind"].fields}
    assert kinds == set(FEEDBACK_LABELS)


@pytest.mark.parametrize("name", sorted(EXAMPLE_EVENTS))
def test_event_examples_set_every_field(name: str) -> None:
    # A field no example sets would go untested: a new field needs a value in an example too.
    assert set.intersection(*(unset_fields(event) for event in EXAMPLE_EVENTS[name])) == set()


@pytest.mark.parametrize(
    "event",
    [event for events in EXAMPLE_EVENTS.values() for event in events],
    ids=lambda event: event.DESCRIPTOR.name,
)
def test_event_round_trips_through_binary_and_json(event: Message) -> None:
    assert_round_trips(event)


def test_schema_version_current_is_the_newest_version() -> None:
    numbers = events_pb2.SchemaVersion.values()
    assert events_pb2.SCHEMA_VERSION_CURRENT == max(numbers) >= 1


def test_optional_sampling_fields_tell_unset_from_zero() -> None:
    greedy = common_pb2.SamplingParams(temperature=0.0)
    defaults = common_pb2.SamplingParams()

    assert greedy.HasField("temperature") and not defaults.HasField("temperature")
    parsed = json_format.Parse(json_format.MessageToJson(greedy), common_pb2.SamplingParams())
    assert parsed.HasField("temperature")


def test_feedback_label_holds_exactly_one_kind() -> None:
    label = feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP)
    label.rating = 4

    assert label.WhichOneof("kind") == "rating"
    assert label.thumb == feedback_pb2.THUMB_UNSPECIFIED


# --- (d) arbitrary values of key messages round-trip -------------------------------------------

MAX_LIST = 3
FLOAT32_MAX = 3.4028234663852886e38
SCALAR_VALUES: dict[int, st.SearchStrategy[Any]] = {
    # NaN is left out only because NaN != NaN would make equality meaningless; infinities stay.
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=False),
    # Python's json_format prints float32's largest finite value as 3.4028235e+38, then refuses to
    # parse it back (protocolbuffers/protobuf#8336); no value of ours comes near it.
    FieldDescriptor.TYPE_FLOAT: st.floats(allow_nan=False, width=32).filter(lambda x: abs(x) != FLOAT32_MAX),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: st.text(max_size=12),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=12),
}
# The JSON mapping only allows timestamps in years 0001-9999.
TIMESTAMPS = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.integers(-62_135_596_800, 253_402_300_799),
    nanos=st.integers(0, 999_999_999),
)


def single_values(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return messages(field.message_type)
    if field.enum_type is not None:
        return st.sampled_from([value.number for value in field.enum_type.values])
    return SCALAR_VALUES[field.type]


def field_values(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (field.message_type.fields_by_name[name] for name in ("key", "value"))
        return st.dictionaries(single_values(key), single_values(value), max_size=MAX_LIST)
    if field.is_repeated:
        return st.lists(single_values(field), max_size=MAX_LIST)
    return single_values(field)


def as_keyword(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return values.map(lambda value: {name: value})


@cache
def messages(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Any message of this type: each field set or not, at most one member of each oneof.

    (Our schema has no recursive messages; one would need `st.deferred` here.)
    """
    if descriptor.full_name == "google.protobuf.Timestamp":
        return TIMESTAMPS
    oneofs = real_oneofs(descriptor)
    in_oneof = {field.name for oneof in oneofs for field in oneof.fields}
    plain = st.fixed_dictionaries(
        {}, optional={field.name: field_values(field) for field in descriptor.fields if field.name not in in_oneof}
    )
    one_per_oneof = [
        st.one_of(st.just({}), *(as_keyword(field.name, field_values(field)) for field in oneof.fields))
        for oneof in oneofs
    ]
    message_class = message_factory.GetMessageClass(descriptor)
    return st.tuples(plain, *one_per_oneof).map(
        lambda parts: message_class(**{name: value for part in parts for name, value in part.items()})
    )


KEY_MESSAGES = [
    inference_pb2.GenerateRequest,
    inference_pb2.GenerateStreamResponse,
    feedback_pb2.SubmitRequest,
    events_pb2.FeedbackEvent,
    events_pb2.VersionEvent,
]


@pytest.mark.parametrize("message_class", KEY_MESSAGES, ids=lambda cls: cls.DESCRIPTOR.name)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_of_a_key_message_round_trips(message_class: type[Message], data: st.DataObject) -> None:
    assert_round_trips(data.draw(messages(message_class.DESCRIPTOR)))
