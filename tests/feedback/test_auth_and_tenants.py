"""With auth on: API keys decide the tenant; tenants decide whether raters may judge others' responses."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from google.protobuf import json_format

from tests.feedback.support import (
    TRANSPORTS,
    InProcessServer,
    call,
    derived_config,
    fresh_topic,
    post_json,
    response_ids,
    response_record,
    service_config,
    thumb,
)
from trimtab.auth import hash_key
from trimtab.config import TrimtabConfig

pytestmark = pytest.mark.integration

ACME = {"authorization": "Bearer acme-secret"}
GLOBEX = {"x-api-key": "globex-secret"}
UNKNOWN_KEY = "a-guessed-key-never-logged"


@pytest.fixture(scope="module")
def guarded(stack: TrimtabConfig) -> Iterator[InProcessServer]:
    auth = {
        "enabled": True,
        "tenants": {"default": {}, "acme": {"allow_raters": True}, "globex": {"allow_raters": False}},
        "api_keys": [
            {"name": "acme-app", "sha256": hash_key("acme-secret"), "tenant": "acme"},
            {"name": "globex-app", "sha256": hash_key("globex-secret"), "tenant": "globex"},
        ],
    }
    server = InProcessServer(service_config(derived_config(stack, auth=auth), fresh_topic()))
    yield server
    server.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "missing API key"), ({"x-api-key": "guess"}, "unknown API key"), ({"authorization": "Basic x"}, "missing")],
)
def test_calls_without_a_known_key_are_unauthenticated(
    guarded: InProcessServer, transport: str, headers: dict[str, str], message: str
) -> None:
    record = guarded.put(response_record(tenant="acme"))
    outcome = call(guarded, thumb(response_ids(record)[0]), transport, headers)
    assert outcome.status == "UNAUTHENTICATED" and outcome.message.startswith(message)
    if transport == "http":
        assert outcome.http_status == 401


@pytest.mark.parametrize("path", ["/v1/feedback", "/v1/feedback:batch"])
def test_a_key_whose_bytes_are_not_utf8_is_unknown_not_a_failure(guarded: InProcessServer, path: str) -> None:
    item = json_format.MessageToDict(thumb(response_ids(guarded.put(response_record(tenant="acme")))[0]))
    body = {"items": [item]} if path.endswith(":batch") else item
    # urllib sends the header as Latin-1: the byte 0xE9, which aiohttp keeps as a lone surrogate.
    status, answer, _ = post_json(guarded.url + path, body, {"x-api-key": "caf\u00e9"})
    error = answer["error"]
    assert (status, error["status"], error["message"]) == (401, "UNAUTHENTICATED", "unknown API key")


def test_a_tenant_that_allows_raters_accepts_feedback_from_other_users(guarded: InProcessServer) -> None:
    record = guarded.put(response_record(user_id="served-user", tenant="acme"))
    first, second = response_ids(record)
    assert call(guarded, thumb(first, user_id="served-user"), "grpc", ACME).status == "OK"
    assert call(guarded, thumb(second, user_id="rater-7"), "http", ACME).status == "OK"


def test_a_tenant_without_raters_refuses_other_users(guarded: InProcessServer) -> None:
    record = guarded.put(response_record(user_id="served-user", tenant="globex"))
    outcome = call(guarded, thumb(response_ids(record)[0], user_id="rater-7"), "grpc", GLOBEX)
    assert outcome.status == "PERMISSION_DENIED"
    assert "tenant 'globex' does not allow raters" in outcome.message


def test_another_tenants_responses_do_not_exist_for_a_key(guarded: InProcessServer) -> None:
    record = guarded.put(response_record(user_id="served-user", tenant="acme"))
    for transport in TRANSPORTS:
        outcome = call(guarded, thumb(response_ids(record)[0], user_id="served-user"), transport, GLOBEX)
        assert outcome.status == "NOT_FOUND", transport


def test_the_same_feedback_id_from_another_tenant_is_a_different_submission(guarded: InProcessServer) -> None:
    mine = guarded.put(response_record(user_id="u", tenant="acme"))
    theirs = guarded.put(response_record(user_id="u", tenant="globex"))
    first = thumb(response_ids(mine)[0], user_id="u")
    assert call(guarded, first, "grpc", ACME).status == "OK"
    same_id = thumb(response_ids(theirs)[0], user_id="u", feedback_id=first.feedback_id)
    assert call(guarded, same_id, "grpc", GLOBEX).status == "ALREADY_EXISTS"


def test_no_api_key_reaches_the_log(guarded: InProcessServer, caplog: pytest.LogCaptureFixture) -> None:
    """Every record any logger wrote while keys were accepted and refused, down to DEBUG (the broker client's
    chatter included), is free of them."""
    caplog.set_level(logging.DEBUG)
    for transport in TRANSPORTS:
        record = guarded.put(response_record(user_id="u", tenant="acme"))
        assert call(guarded, thumb(response_ids(record)[0], user_id="u"), transport, ACME).status == "OK"
        refused = call(guarded, thumb(response_ids(record)[1], user_id="u"), transport, {"x-api-key": UNKNOWN_KEY})
        assert refused.status == "UNAUTHENTICATED"
    assert caplog.records
    logged = caplog.text + "\n".join(str(record.args) for record in caplog.records)
    for secret in ("acme-secret", "globex-secret", UNKNOWN_KEY):
        assert secret not in logged
