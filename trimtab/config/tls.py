"""TLS for every trimtab server and for trimtab's own clients of them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from trimtab.config.base import Section


class TlsConfig(Section):
    """One deployment, one CA: every trimtab server (gRPC and HTTP) presents `cert_file`, and every trimtab
    client of them (serving forwarding feedback, the router, the reward service's callers, health checks)
    verifies it against `ca_file`. With `client_auth` (mutual TLS) servers accept only clients presenting a
    certificate signed by `ca_file`, and trimtab's clients present `cert_file`. Off by default."""

    enabled: bool = Field(default=False, description="Serve TLS only (no plaintext port) and connect with TLS.")
    cert_file: Path | None = Field(
        default=None, description="PEM certificate chain this process presents (as a server, and as a client for mTLS)."
    )
    key_file: Path | None = Field(default=None, description="PEM private key of `cert_file`.")
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA certificate(s) peers must chain to; unset: the system's roots verify servers.",
    )
    client_auth: bool = Field(
        default=False, description="Mutual TLS: servers require a client certificate signed by `ca_file`."
    )
    server_name: str = Field(
        default="",
        description="The name trimtab's clients expect in server certificates; empty: the host they dial.",
    )

    @model_validator(mode="after")
    def _complete(self) -> TlsConfig:
        if not self.enabled:
            return self
        if self.cert_file is None or self.key_file is None:
            raise ValueError("enabled needs cert_file and key_file (the PEM certificate chain and its private key)")
        if self.client_auth and self.ca_file is None:
            raise ValueError("client_auth needs ca_file (the CA that signs the clients' certificates)")
        return self
