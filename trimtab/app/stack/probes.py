"""Readiness checks: is something listening, and does it speak the protocol we expect."""

from __future__ import annotations

import logging
import socket

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

# kafka-python logs every refused connection at ERROR while a broker starts; the probe's caller
# reports the outcome itself.
logging.getLogger("kafka").setLevel(logging.CRITICAL)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def kafka_ready(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """The broker answers a metadata request."""
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    if not port_open(host, int(port)):
        return False  # fail fast: the client would retry its bootstrap for the whole timeout
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def redis_ready(url: str, timeout_s: float = 1.0) -> bool:
    """Redis answers PING."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
