"""`feedback.server.run`: a port that is taken is a one-line error and exit code 1, with nothing left running."""

from __future__ import annotations

import socket

import pytest

from feedback.server import run
from tests.feedback.support import derived_config
from trimtab.config import TrimtabConfig

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("endpoint", ["grpc", "http"])
def test_a_taken_port_is_reported_and_exits_1(
    stack: TrimtabConfig, endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"grpc_port": 0, "http_port": 0} | {f"{endpoint}_port": port}
        assert run(derived_config(stack, feedback=ports)) == 1
    label = "gRPC" if endpoint == "grpc" else "HTTP"
    assert f"feedback: cannot bind {label} to 127.0.0.1:{port}" in capsys.readouterr().err
