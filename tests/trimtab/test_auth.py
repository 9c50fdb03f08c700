"""API keys to tenants: hashed keys in config, bearer or x-api-key on the wire, off by default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trimtab.auth import ANONYMOUS, Authenticator, Principal, Unauthenticated, credential, hash_key
from trimtab.config.auth import ApiKeyConfig, AuthConfig, TenantConfig


def auth_on() -> AuthConfig:
    return AuthConfig(
        enabled=True,
        tenants={"default": TenantConfig(), "acme": TenantConfig(allow_raters=True)},
        api_keys=[ApiKeyConfig(name="acme-app", sha256=hash_key("s3cret"), tenant="acme")],
    )


def test_auth_off_acts_for_the_default_tenant_without_a_key() -> None:
    expected = Principal(ANONYMOUS, "default", allow_raters=False, admin=True)  # nothing to tell callers apart
    assert Authenticator(AuthConfig()).principal(None) == expected


def test_a_configured_key_maps_to_its_tenant_and_what_the_tenant_allows() -> None:
    assert Authenticator(auth_on()).principal("s3cret") == Principal("acme-app", "acme", allow_raters=True)


def test_only_keys_configured_as_admin_are_admins() -> None:
    operator = ApiKeyConfig(name="ops", sha256=hash_key("0ps"), tenant="default", admin=True)
    keys = Authenticator(auth_on().model_copy(update={"api_keys": [*auth_on().api_keys, operator]}))
    assert keys.principal("0ps").admin and not keys.principal("s3cret").admin


@pytest.mark.parametrize(("presented", "message"), [(None, "missing API key"), ("", "missing API key"),
                                                    ("wrong", "unknown API key")])  # fmt: skip
def test_missing_or_unknown_keys_are_unauthenticated(presented: str | None, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        Authenticator(auth_on()).principal(presented)


def test_the_key_is_read_from_bearer_or_x_api_key_headers() -> None:
    assert credential([("Authorization", "Bearer abc ")]) == "abc"
    assert credential([("authorization", b"bearer abc")]) == "abc"
    assert credential([("x-api-key", "k")]) == "k"
    assert credential([("authorization", "Basic abc"), ("traceparent", "00-...")]) is None


def test_config_refuses_unknown_tenants_bad_digests_and_duplicate_keys() -> None:
    with pytest.raises(ValidationError, match="names tenant 'nope'"):
        AuthConfig(api_keys=[ApiKeyConfig(name="k", sha256=hash_key("k"), tenant="nope")])
    with pytest.raises(ValidationError, match="64 lower-case hex"):
        ApiKeyConfig(name="k", sha256="ABC", tenant="default")
    with pytest.raises(ValidationError, match="default_tenant 'x'"):
        AuthConfig(default_tenant="x")
    twice = [ApiKeyConfig(name=n, sha256=hash_key("same"), tenant="default") for n in ("a", "b")]
    with pytest.raises(ValidationError, match="same sha256"):
        AuthConfig(api_keys=twice)
