"""Where the message broker and Redis are, and how the local stack runs them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from trimtab.config.base import Section


class TopicSpec(Section):
    """One Kafka topic and how it is laid out."""

    name: str = Field(description="Topic name on the broker.")
    partitions: int = Field(ge=1, description="Partition count used when trimtab creates the topic.")
    replication_factor: int = Field(
        default=1, ge=1, description="Replicas per partition (1 on the local broker; 3 on a cluster)."
    )


class Topics(Section):
    """The topics trimtab uses; keys are roles, values say what the topic is called."""

    responses: TopicSpec = Field(
        default=TopicSpec(name="trimtab.responses", partitions=4),
        description="ResponseLogged events: one per generated candidate.",
    )
    feedback: TopicSpec = Field(
        default=TopicSpec(name="trimtab.feedback", partitions=4),
        description="FeedbackEvent records the learner trains on (keyed by request id).",
    )
    versions: TopicSpec = Field(
        # One partition: version events are a single, totally ordered history.
        default=TopicSpec(name="trimtab.versions", partitions=1),
        description="VersionEvent records: published, canary, promoted, rolled back, swaps.",
    )

    def all(self) -> list[TopicSpec]:
        return [self.responses, self.feedback, self.versions]


class KafkaConfig(Section):
    """The Kafka-protocol broker every component talks to."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:19092",
        description="host:port[,host:port...] of the brokers; a loopback address the local stack can own.",
    )
    client_id: str = Field(default="trimtab", description="Kafka client id prefix, visible in broker logs.")
    request_timeout_ms: int = Field(
        default=10_000, ge=1000, description="How long a produce/metadata request may take before it fails."
    )
    topics: Topics = Field(default_factory=Topics, description="Topic names and layouts.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {server!r}")
        return value

    @property
    def first_server(self) -> tuple[str, int]:
        host, _, port = self.bootstrap_servers.split(",")[0].strip().rpartition(":")
        return host, int(port)


class RedisConfig(Section):
    """The Redis that holds response records, pointers and rate limits."""

    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="redis:// URL. If nothing answers there and it is loopback, `trimtab up` starts one.",
    )
    key_prefix: str = Field(
        default="trimtab:", description="Prefix of every key trimtab writes, so deployments can share a Redis."
    )

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class StackConfig(Section):
    """How `trimtab up` runs the local broker and Redis."""

    run_dir: Path = Field(
        default=Path(".trimtab/run"), description="Pid files, logs and state of the services `up` started."
    )
    services_file: Path = Field(
        default=Path("deploy/local/services.yaml"),
        description="Definitions (command lines, readiness checks) of the local services.",
    )
    start_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a service may take to become ready before `up` fails."
    )
    stop_timeout_s: float = Field(
        default=10.0, gt=0, description="Grace period after SIGTERM before `down` sends SIGKILL."
    )
