"""The feedback service over TLS and mutual TLS, gRPC and HTTP, with certificates the test makes."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from tests.feedback.support import (
    InProcessServer,
    derived_config,
    fresh_topic,
    response_ids,
    response_record,
    service_config,
    thumb,
)
from tests.tls import Certificates, Pem, make_certificates
from trimtab.config import TrimtabConfig
from trimtab.config.tls import TlsConfig
from trimtab.tls import grpc_channel
from trimtab.v1 import feedback_pb2, feedback_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def tls_server(stack: TrimtabConfig, tls: TlsConfig) -> InProcessServer:
    return InProcessServer(service_config(derived_config(stack, tls=tls.model_dump()), fresh_topic()))


@pytest.fixture(scope="module")
def mutual(stack: TrimtabConfig, certificates: Certificates) -> Iterator[InProcessServer]:
    server = tls_server(stack, certificates.tls(client_auth=True))
    yield server
    server.close()


@pytest.fixture(scope="module")
def one_way(stack: TrimtabConfig, certificates: Certificates) -> Iterator[InProcessServer]:
    server = tls_server(stack, certificates.tls(client_auth=False))
    yield server
    server.close()


def client_tls(certificates: Certificates, identity: Pem | None, ca: Path | None = None) -> TlsConfig:
    """What a trimtab client of the deployment runs with (presenting `identity` if given)."""
    return TlsConfig(
        enabled=True,
        cert_file=identity.cert if identity else certificates.server.cert,
        key_file=identity.key if identity else certificates.server.key,
        ca_file=ca or certificates.ca,
        client_auth=identity is not None,
    )


def submit(server: InProcessServer, channel: grpc.Channel) -> grpc.StatusCode:
    request = thumb(response_ids(server.put(response_record()))[0])
    try:
        accepted = feedback_pb2_grpc.FeedbackServiceStub(channel).Submit(request, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()
    assert accepted.event_id
    return grpc.StatusCode.OK


def post(server: InProcessServer, context: ssl.SSLContext | None, scheme: str = "https") -> int | str:
    """The HTTP status of a batch POST, or the kind of failure when no HTTP answer came."""
    request = thumb(response_ids(server.put(response_record()))[0])
    body = json.dumps(json_format.MessageToDict(feedback_pb2.SubmitBatchRequest(items=[request]))).encode()
    url = f"{scheme}://127.0.0.1:{server.server.http_port}/v1/feedback:batch"
    call = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=10, context=context) as response:
            results = json.loads(response.read())["results"]
            assert "accepted" in results[0], results
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ssl.SSLError, ConnectionError) as error:
        return type(getattr(error, "reason", error)).__name__


def test_mutual_tls_serves_clients_with_a_certificate_from_the_ca(
    mutual: InProcessServer, certificates: Certificates
) -> None:
    address = f"127.0.0.1:{mutual.server.grpc_port}"
    assert submit(mutual, grpc_channel(address, client_tls(certificates, certificates.client))) == grpc.StatusCode.OK
    assert post(mutual, certificates.client_context(certificates.client)) == 200


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate", "plaintext"])
def test_mutual_tls_refuses_every_other_client(mutual: InProcessServer, certificates: Certificates, who: str) -> None:
    address = f"127.0.0.1:{mutual.server.grpc_port}"
    if who == "plaintext":
        channel, context, scheme = grpc.insecure_channel(address), None, "http"
    else:
        identity = certificates.stranger if who == "another CA's certificate" else None
        tls = client_tls(certificates, identity)
        channel, context, scheme = grpc_channel(address, tls), certificates.client_context(identity), "https"
    assert submit(mutual, channel) == grpc.StatusCode.UNAVAILABLE
    assert isinstance(post(mutual, context, scheme), str)  # no HTTP answer at all: the handshake failed
    assert submit(mutual, grpc_channel(address, client_tls(certificates, certificates.client))) == grpc.StatusCode.OK


def test_one_way_tls_serves_any_client_that_trusts_the_server(
    one_way: InProcessServer, certificates: Certificates, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{one_way.server.grpc_port}"
    assert submit(one_way, grpc_channel(address, client_tls(certificates, None))) == grpc.StatusCode.OK
    assert post(one_way, certificates.client_context(None)) == 200
    # A client that does not trust the server's CA does not talk to it.
    elsewhere = make_certificates(tmp_path / "elsewhere").ca
    untrusting = client_tls(certificates, None, ca=elsewhere)
    assert submit(one_way, grpc_channel(address, untrusting)) == grpc.StatusCode.UNAVAILABLE
    context = ssl.create_default_context(cafile=str(elsewhere))
    assert post(one_way, context) == "SSLCertVerificationError"
