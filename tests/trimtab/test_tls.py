"""tls.*: what a TLS config must hold, and a clear error for each file that is missing or wrong."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from tests.tls import make_certificates
from trimtab.config.tls import TlsConfig
from trimtab.tls import TlsError, add_grpc_port, client_ssl_context, scheme, server_ssl_context


def test_tls_is_off_by_default_and_plaintext_then() -> None:
    tls = TlsConfig()
    assert not tls.enabled and scheme(tls) == "http"
    assert server_ssl_context(tls) is None and client_ssl_context(tls) is None
    server = grpc.server(thread_pool=None)  # type: ignore[arg-type]
    assert add_grpc_port(server, "127.0.0.1:0", tls) > 0


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"enabled": True}, "enabled needs cert_file and key_file"),
        ({"enabled": True, "cert_file": "c.pem"}, "enabled needs cert_file and key_file"),
        (
            {"enabled": True, "cert_file": "c.pem", "key_file": "k.pem", "client_auth": True},
            "client_auth needs ca_file",
        ),
    ],
)
def test_an_incomplete_tls_config_is_refused_saying_what_is_missing(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        TlsConfig.model_validate(fields)


def test_a_missing_or_wrong_file_names_its_setting(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "certs")
    good = certificates.tls(client_auth=True)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    missing = good.model_copy(update={"key_file": tmp_path / "nowhere.pem"})
    server = grpc.server(thread_pool=None)  # type: ignore[arg-type]
    with pytest.raises(TlsError, match=r"tls.key_file \(.*nowhere.pem\): No such file"):
        add_grpc_port(server, "127.0.0.1:0", missing)
    with pytest.raises(TlsError, match=r"tls.ca_file \(.*not.pem\): not a PEM file"):
        add_grpc_port(server, "127.0.0.1:0", good.model_copy(update={"ca_file": not_pem}))
    with pytest.raises(TlsError, match=r"tls.cert_file / tls.key_file"):
        server_ssl_context(missing)
    with pytest.raises(TlsError, match=r"tls.ca_file"):
        client_ssl_context(good.model_copy(update={"ca_file": not_pem}))


def test_a_complete_config_makes_servers_and_clients(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path).tls(client_auth=True)
    assert scheme(tls) == "https"
    assert server_ssl_context(tls) is not None and client_ssl_context(tls) is not None
    server = grpc.server(thread_pool=None)  # type: ignore[arg-type]
    assert add_grpc_port(server, "127.0.0.1:0", tls) > 0
