"""What makes a submission valid: its own shape first, then the response records it names.

`check_shape` needs nothing but the request and runs before any I/O; `check_against_records` needs
the records from the response log. Every refusal names the field (INVALID_ARGUMENT) or says what
was not found or not allowed, in words a client developer can act on.
"""

from __future__ import annotations

from collections.abc import Mapping

from feedback.errors import FeedbackError, invalid, not_found, permission_denied
from trimtab.auth import ANONYMOUS, Principal
from trimtab.config.feedback import FeedbackConfig
from trimtab.events import RATING_MAX, RATING_MIN
from trimtab.v1 import common_pb2, events_pb2, feedback_pb2

ATTRIBUTES = tuple(field.name for field in common_pb2.SteerLMAttributes.DESCRIPTOR.fields)
_THUMBS = (feedback_pb2.THUMB_UP, feedback_pb2.THUMB_DOWN)


def kind_of(request: feedback_pb2.SubmitRequest) -> str:
    """The label's kind: thumb, pairwise, rating, attributes, correction or comment ("" if unset)."""
    return request.label.WhichOneof("kind") or ""


def judged_responses(request: feedback_pb2.SubmitRequest) -> dict[str, str]:
    """The responses a (shape-checked) submission is about, by the field naming each: one, or the pair's two."""
    if kind_of(request) == "pairwise":
        pair = request.label.pairwise
        return {
            "label.pairwise.chosen_response_id": pair.chosen_response_id,
            "label.pairwise.rejected_response_id": pair.rejected_response_id,
        }
    return {"response_id": request.response_id}


def judged_response_ids(request: feedback_pb2.SubmitRequest) -> list[str]:
    """The responses a (shape-checked) submission is about: one, or the pair's two."""
    return list(judged_responses(request).values())


def check_shape(request: feedback_pb2.SubmitRequest, config: FeedbackConfig) -> None:
    """Raise INVALID_ARGUMENT for the first field that is missing, malformed or out of range."""
    _check_id("feedback_id", request.feedback_id, config.max_id_chars, ascii_only=True)
    _check_id("user_id", request.user_id, config.max_id_chars)
    kind = kind_of(request)
    if not kind:
        raise invalid("label", "required: set exactly one of thumb, pairwise, rating, attributes, correction, comment")
    if kind == "pairwise":
        if request.response_id:
            raise invalid("response_id", "must be empty for pairwise feedback (the label names both responses)")
        _check_pair(request.label.pairwise, config)
    else:
        _check_id("response_id", request.response_id, config.max_id_chars)
        _check_label(request.label, kind, config)


def _check_id(field: str, value: str, limit: int, ascii_only: bool = False) -> None:
    if not value:
        raise invalid(field, "required")
    if len(value) > limit:
        raise invalid(field, f"at most {limit} characters, got {len(value)}")
    if ascii_only and not all(" " <= char <= "~" for char in value):
        raise invalid(field, "printable ASCII characters only")
    if not ascii_only and not value.isprintable():
        raise invalid(field, "must not contain control characters")


def _check_pair(pair: feedback_pb2.Pairwise, config: FeedbackConfig) -> None:
    _check_id("label.pairwise.chosen_response_id", pair.chosen_response_id, config.max_id_chars)
    _check_id("label.pairwise.rejected_response_id", pair.rejected_response_id, config.max_id_chars)
    if pair.chosen_response_id == pair.rejected_response_id:
        raise invalid("label.pairwise.rejected_response_id", "must differ from chosen_response_id")


def _check_label(label: feedback_pb2.FeedbackLabel, kind: str, config: FeedbackConfig) -> None:
    if kind == "thumb" and label.thumb not in _THUMBS:
        raise invalid("label.thumb", f"must be THUMB_UP or THUMB_DOWN, got {label.thumb}")
    if kind == "rating" and not RATING_MIN <= label.rating <= RATING_MAX:
        raise invalid("label.rating", f"must be {RATING_MIN} to {RATING_MAX}, got {label.rating}")
    if kind == "attributes":
        _check_attributes(label.attributes)
    if kind == "correction":
        _check_text("label.correction", label.correction, config.max_correction_chars)
    if kind == "comment":
        _check_text("label.comment", label.comment, config.max_comment_chars)


def _check_attributes(attributes: common_pb2.SteerLMAttributes) -> None:
    given = [name for name in ATTRIBUTES if attributes.HasField(name)]
    if not given:
        raise invalid("label.attributes", f"set at least one of {', '.join(ATTRIBUTES)}")
    for name in given:
        value = getattr(attributes, name)
        if not 0 <= value <= 4:
            raise invalid(f"label.attributes.{name}", f"must be 0 to 4, got {value}")


def _check_text(field: str, text: str, limit: int) -> None:
    if not text.strip():
        raise invalid(field, "must not be empty")
    if len(text) > limit:
        raise invalid(field, f"at most {limit} characters, got {len(text)}")


def check_against_records(
    request: feedback_pb2.SubmitRequest,
    records: Mapping[str, events_pb2.ResponseLogged | None],
    principal: Principal,
) -> events_pb2.ResponseLogged:
    """The record of the judged request, or NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT.

    `records` holds what the response log had (None: unknown or expired) after `feedback.records` waited
    for any a client may have outrun, so a missing record here is final.

    A record of another tenant is NOT_FOUND, as if it did not exist: a tenant learns nothing about
    another's responses. With auth off every call acts for the default tenant and records of any
    tenant are visible (there is no identity to tell them apart).
    """
    found: list[events_pb2.ResponseLogged] = []
    for field, response_id in judged_responses(request).items():
        record = records.get(response_id)
        if record is None or (principal.key_name != ANONYMOUS and record.tenant != principal.tenant):
            raise not_found(f"{field}: response {response_id!r} is unknown or has expired")
        found.append(record)
    if len(found) == 2 and found[0].request_id != found[1].request_id:
        raise invalid(
            "label.pairwise.rejected_response_id",
            "must be a candidate of the same request as chosen_response_id "
            f"({found[1].request_id!r} != {found[0].request_id!r})",
        )
    record = found[0]
    if request.user_id != record.user_id and not principal.allow_raters:
        raise _not_the_served_user(request.user_id, principal.tenant)
    return record


def _not_the_served_user(user_id: str, tenant: str) -> FeedbackError:
    return permission_denied(
        f"user {user_id!r} was not the user served this response, and tenant {tenant!r} does not allow raters"
    )
