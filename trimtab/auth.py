"""API keys to tenants: who is calling, shared by every service that takes requests.

A caller presents its key as `authorization: Bearer KEY` or `x-api-key: KEY` (gRPC metadata or HTTP
headers alike). Only keys' SHA-256 digests are configured (`trimtab.config.auth`). With auth off
(the default, so the demo needs no keys) every call acts for the configured default tenant.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from trimtab.config.auth import AuthConfig
from trimtab.errors import TrimtabError

ANONYMOUS = "anonymous"


class Unauthenticated(TrimtabError):
    """The call carried no API key, or one that is not configured."""


@dataclass(frozen=True)
class Principal:
    """Who a call acts for."""

    key_name: str  # the API key's configured name, or "anonymous" while auth is off
    tenant: str
    allow_raters: bool  # the tenant lets users other than the served one give feedback
    admin: bool = False  # may change what serves (AdminService); every caller while auth is off


def hash_key(key: str) -> str:
    """The digest to configure for `key` (AuthConfig.api_keys[].sha256). A header's bytes that are not UTF-8
    (aiohttp keeps them as surrogates) are hashed as they came: no configured key matches them."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def credential(headers: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The API key in request headers or gRPC metadata, or None if there is none."""
    for name, raw in headers:
        value = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        lowered = name.lower()
        if lowered == "x-api-key":
            return value.strip()
        if lowered == "authorization" and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


class Authenticator:
    """Turns a presented credential into a Principal, or raises Unauthenticated."""

    def __init__(self, config: AuthConfig) -> None:
        self._config = config
        self._keys = {key.sha256: key for key in config.api_keys}

    def principal(self, presented: str | None) -> Principal:
        if not self._config.enabled:
            return self._principal(ANONYMOUS, self._config.default_tenant, admin=True)
        if not presented:
            raise Unauthenticated("missing API key: send `authorization: Bearer KEY` or `x-api-key: KEY`")
        digest = hash_key(presented)
        # Constant-time comparison against every configured digest: no timing hint about near misses.
        match = [key for sha, key in self._keys.items() if hmac.compare_digest(sha, digest)]
        if not match:
            raise Unauthenticated("unknown API key")
        return self._principal(match[0].name, match[0].tenant, admin=match[0].admin)

    def _principal(self, key_name: str, tenant: str, admin: bool) -> Principal:
        allow_raters = self._config.tenants[tenant].allow_raters
        return Principal(key_name=key_name, tenant=tenant, allow_raters=allow_raters, admin=admin)
