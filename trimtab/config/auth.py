"""API keys and tenants, shared by every service that takes requests (feedback now, serving later)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from trimtab.config.base import Section

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class TenantConfig(Section):
    """What a tenant's users may do."""

    allow_raters: bool = Field(
        default=False,
        description="Whether users other than the one served (raters, annotators) may give feedback on its responses.",
    )


class ApiKeyConfig(Section):
    """One API key. Only its SHA-256 is configured, so config files never hold a usable secret."""

    name: str = Field(min_length=1, description="Who holds the key, for logs, metrics and rate limits.")
    sha256: str = Field(description="Lower-case hex SHA-256 of the key (`trimtab.auth.hash_key(key)`).")
    tenant: str = Field(min_length=1, description="The tenant every request made with this key acts for.")
    admin: bool = Field(
        default=False,
        description="May call AdminService (list versions, set the canary, promote, roll back): operators' keys only.",
    )

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not _SHA256_HEX.fullmatch(value):
            raise ValueError("must be 64 lower-case hex characters (the SHA-256 of the key)")
        return value


class AuthConfig(Section):
    """Who may call trimtab's APIs. Off by default, so the local demo needs no keys."""

    enabled: bool = Field(
        default=False,
        description="Require an API key (`authorization: Bearer KEY` or `x-api-key: KEY`) on every call.",
    )
    default_tenant: str = Field(
        default="default", min_length=1, description="The tenant of every call while auth is off."
    )
    tenants: dict[str, TenantConfig] = Field(
        default_factory=lambda: {"default": TenantConfig()}, description="Tenants by name and what they allow."
    )
    api_keys: list[ApiKeyConfig] = Field(default_factory=list, description="The accepted API keys.")

    @model_validator(mode="after")
    def _tenants_exist(self) -> AuthConfig:
        known = set(self.tenants)
        if self.default_tenant not in known:
            raise ValueError(f"default_tenant {self.default_tenant!r} is not one of tenants {sorted(known)}")
        for key in self.api_keys:
            if key.tenant not in known:
                raise ValueError(f"api key {key.name!r} names tenant {key.tenant!r}, not one of {sorted(known)}")
        digests = [key.sha256 for key in self.api_keys]
        if len(set(digests)) != len(digests):
            raise ValueError("two api_keys have the same sha256")
        return self
