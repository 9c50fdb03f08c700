"""Validation: every malformed submission is INVALID_ARGUMENT naming its field; records decide the rest."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from feedback.errors import FeedbackError
from feedback.validation import check_against_records, check_shape
from tests.feedback.support import attributes, label, response_ids, response_record
from trimtab.auth import Principal
from trimtab.config.feedback import FeedbackConfig
from trimtab.v1 import feedback_pb2

CONFIG = FeedbackConfig(max_comment_chars=10, max_correction_chars=20)
SERVED = Principal(key_name="anonymous", tenant="default", allow_raters=False)


def request(**fields: Any) -> feedback_pb2.SubmitRequest:
    base: dict[str, Any] = {"feedback_id": "fb-1", "user_id": "u1", "response_id": "r1", "label": label(rating=4)}
    return feedback_pb2.SubmitRequest(**(base | fields))


def refusal(call: object, *args: object) -> FeedbackError:
    with pytest.raises(FeedbackError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"feedback_id": ""}, "feedback_id: required"),
        ({"feedback_id": "x" * 129}, "feedback_id: at most 128 characters, got 129"),
        ({"feedback_id": "caf\u00e9"}, "feedback_id: printable ASCII characters only"),
        ({"feedback_id": "a\nb"}, "feedback_id: printable ASCII characters only"),
        ({"user_id": ""}, "user_id: required"),
        ({"user_id": "u\x00"}, "user_id: must not contain control characters"),
        ({"label": None}, "label: required: set exactly one of"),
        ({"response_id": ""}, "response_id: required"),
        ({"label": label(thumb=feedback_pb2.THUMB_UNSPECIFIED)}, "label.thumb: must be THUMB_UP or THUMB_DOWN, got 0"),
        ({"label": label(thumb=7)}, "label.thumb: must be THUMB_UP or THUMB_DOWN, got 7"),
        ({"label": label(rating=0)}, "label.rating: must be 1 to 5, got 0"),
        ({"label": label(rating=6)}, "label.rating: must be 1 to 5, got 6"),
        ({"label": label(attributes=attributes())}, "label.attributes: set at least one of helpfulness"),
        ({"label": label(attributes=attributes(coherence=5))}, "label.attributes.coherence: must be 0 to 4, got 5"),
        ({"label": label(attributes=attributes(toxicity=-1))}, "label.attributes.toxicity: must be 0 to 4, got -1"),
        ({"label": label(correction="  ")}, "label.correction: must not be empty"),
        ({"label": label(correction="x" * 21)}, "label.correction: at most 20 characters, got 21"),
        ({"label": label(comment="")}, "label.comment: must not be empty"),
        ({"label": label(comment="x" * 11)}, "label.comment: at most 10 characters, got 11"),
    ],
)
def test_malformed_fields_are_invalid_argument_naming_the_field(fields: dict[str, object], message: str) -> None:
    error = refusal(check_shape, request(**fields), CONFIG)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message.startswith(message)
    assert error.http_status == 400


@pytest.mark.parametrize(
    ("pair", "fields", "message"),
    [
        (("a", "a", False), {}, "label.pairwise.rejected_response_id: must differ from chosen_response_id"),
        (("", "b", False), {}, "label.pairwise.chosen_response_id: required"),
        (("a", "", True), {}, "label.pairwise.rejected_response_id: required"),
        (("a", "b", False), {"response_id": "r1"}, "response_id: must be empty for pairwise feedback"),
    ],
)
def test_malformed_pairs_name_their_field(pair: tuple[str, str, bool], fields: dict[str, object], message: str) -> None:
    chosen, rejected, tie = pair
    pairwise = feedback_pb2.Pairwise(chosen_response_id=chosen, rejected_response_id=rejected, tie=tie)
    submission = request(**({"response_id": ""} | fields | {"label": label(pairwise=pairwise)}))
    assert refusal(check_shape, submission, CONFIG).message.startswith(message)


def test_every_well_formed_kind_passes() -> None:
    pairwise = label(pairwise=feedback_pb2.Pairwise(chosen_response_id="a", rejected_response_id="b"))
    for kind in (
        label(thumb=feedback_pb2.THUMB_DOWN),
        label(rating=1),
        label(attributes=attributes(helpfulness=0, verbosity=4)),
        label(correction="8"),
        label(comment="too long"),
    ):
        check_shape(request(label=kind), CONFIG)
    check_shape(request(response_id="", label=pairwise), CONFIG)


def test_unknown_response_is_not_found_and_another_user_is_permission_denied() -> None:
    record = response_record(user_id="u1")
    first = response_ids(record)[0]
    missing = refusal(check_against_records, request(response_id="gone"), {"gone": None}, SERVED)
    assert (missing.code, missing.message) == (
        grpc.StatusCode.NOT_FOUND,
        "response_id: response 'gone' is unknown or has expired",
    )
    other = refusal(check_against_records, request(response_id=first, user_id="u2"), {first: record}, SERVED)
    assert other.code == grpc.StatusCode.PERMISSION_DENIED
    assert "user 'u2' was not the user served" in other.message
    raters = Principal(key_name="anonymous", tenant="default", allow_raters=True)
    assert check_against_records(request(response_id=first, user_id="u2"), {first: record}, raters) == record


def test_a_pair_must_come_from_one_request() -> None:
    one, other = response_record(), response_record()
    a, b = response_ids(one)[0], response_ids(other)[0]
    pairwise = label(pairwise=feedback_pb2.Pairwise(chosen_response_id=a, rejected_response_id=b))
    error = refusal(check_against_records, request(response_id="", label=pairwise), {a: one, b: other}, SERVED)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message.startswith("label.pairwise.rejected_response_id: must be a candidate of the same request")


def test_another_tenants_response_is_not_found_when_keys_say_who_calls() -> None:
    record = response_record(user_id="u1", tenant="acme")
    first = response_ids(record)[0]
    other_tenant = Principal(key_name="globex-key", tenant="globex", allow_raters=True)
    assert refusal(check_against_records, request(response_id=first), {first: record}, other_tenant).code == (
        grpc.StatusCode.NOT_FOUND
    )
    same_tenant = Principal(key_name="acme-key", tenant="acme", allow_raters=False)
    assert check_against_records(request(response_id=first), {first: record}, same_tenant) == record
