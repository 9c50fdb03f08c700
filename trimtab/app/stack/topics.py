"""Creating trimtab's topics idempotently, with explicit partition counts."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from trimtab.app.stack.services import StackError
from trimtab.config import KafkaConfig, TopicSpec


def ensure_topics(kafka: KafkaConfig) -> dict[str, int]:
    """Create missing topics; return every topic's partition count. Existing topics are left as they are,
    but one with fewer partitions than configured is an error (per-key ordering depends on the count)."""
    specs = kafka.topics.all()
    admin = KafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-admin",
        request_timeout_ms=kafka.request_timeout_ms,
    )
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            _create(admin, missing, kafka.request_timeout_ms)
        counts = _partition_counts(admin, [spec.name for spec in specs])
    except KafkaError as exc:
        raise StackError(f"topic set-up on {kafka.bootstrap_servers} failed: {exc}") from exc
    finally:
        admin.close()
    for spec in specs:
        if counts.get(spec.name, 0) < spec.partitions:
            raise StackError(
                f"topic {spec.name} has {counts.get(spec.name, 0)} partitions, config asks for "
                f"{spec.partitions}: add partitions on the broker or lower kafka.topics in the config"
            )
    return counts


def _create(admin: KafkaAdminClient, specs: list[TopicSpec], timeout_ms: int) -> None:
    new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor) for s in specs]
    # Another `up` may race us to a topic; the partition check after this still applies.
    with contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topics(new, timeout_ms=timeout_ms, wait_for_metadata=True)


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {meta["name"]: len(meta["partitions"]) for meta in admin.describe_topics(names) if not meta["error_code"]}
