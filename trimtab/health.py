"""Waiting for a trimtab process to say SERVING on standard gRPC health checking (tests, benches, scripts)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trimtab.config.tls import TlsConfig
from trimtab.tls import grpc_channel


def wait_serving(
    address: str,
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    timeout_s: float,
    metadata: Sequence[tuple[str, str]] = (),
    tls: TlsConfig | None = None,
) -> bool:
    """True once the server at `address` reports SERVING; False if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    with grpc_channel(address, tls or TlsConfig()) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and process.poll() is None:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1, metadata=tuple(metadata))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                time.sleep(0.2)
    return False
