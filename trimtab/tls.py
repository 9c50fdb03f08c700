"""TLS as configured (`tls.*`) for gRPC and HTTP, servers and clients, so every process does it one way.

Servers: `add_grpc_port` (a TLS port, or plaintext while TLS is off) and `server_ssl_context` (aiohttp's
TCPSite and Prometheus' exporter). Clients: `grpc_channel` / `aio_grpc_channel` and
`client_ssl_context` (aiohttp sessions). Files are read when a server or client is made, so a missing
or unreadable one stops that process at start-up with TlsError naming the setting.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from trimtab.config.tls import TlsConfig
from trimtab.errors import TrimtabError

GrpcOptions = Sequence[tuple[str, Any]]


class TlsError(TrimtabError):
    """A TLS file is missing, unreadable or not what its setting says."""


def scheme(tls: TlsConfig) -> str:
    """The URL scheme of trimtab's HTTP endpoints."""
    return "https" if tls.enabled else "http"


def add_grpc_port(server: grpc.Server | grpc.aio.Server, address: str, tls: TlsConfig) -> int:
    """Bind `address` with TLS when it is on (mTLS with client_auth); the bound port (0 if it failed)."""
    if not tls.enabled:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(_read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file"))],
        root_certificates=_read(tls.ca_file, "ca_file") if tls.client_auth else None,
        require_client_auth=tls.client_auth,
    )
    return server.add_secure_port(address, credentials)


def grpc_channel(address: str, tls: TlsConfig, options: GrpcOptions = ()) -> grpc.Channel:
    """A blocking channel to a trimtab server."""
    if not tls.enabled:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, _channel_credentials(tls), options=[*options, *_name_override(tls)])


def aio_grpc_channel(address: str, tls: TlsConfig, options: GrpcOptions = ()) -> grpc.aio.Channel:
    """An asyncio channel to a trimtab server."""
    if not tls.enabled:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(address, _channel_credentials(tls), options=[*options, *_name_override(tls)])


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """For an HTTP server: None while TLS is off."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, tls)
    if tls.client_auth:
        _load_ca(context, tls)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """For an HTTP client of trimtab's servers: None while TLS is off (plain http)."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file is not None:
        _load_ca(context, tls)
    if tls.client_auth:
        _load_chain(context, tls)
    return context


def _channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    own = tls.client_auth
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file") if tls.ca_file else None,
        private_key=_read(tls.key_file, "key_file") if own else None,
        certificate_chain=_read(tls.cert_file, "cert_file") if own else None,
    )


def _name_override(tls: TlsConfig) -> list[tuple[str, str]]:
    return [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []


def _load_chain(context: ssl.SSLContext, tls: TlsConfig) -> None:
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"tls.cert_file / tls.key_file ({tls.cert_file}, {tls.key_file}): {exc}") from exc


def _load_ca(context: ssl.SSLContext, tls: TlsConfig) -> None:
    try:
        context.load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"tls.ca_file ({tls.ca_file}): {exc}") from exc


def _read(path: Path | None, setting: str) -> bytes:
    if path is None:
        raise TlsError(f"tls.{setting} is not set")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"tls.{setting} ({path}): {exc.strerror}") from exc
    if b"-----BEGIN" not in data:
        raise TlsError(f"tls.{setting} ({path}): not a PEM file")
    return data
