"""`trimtab reward`: a reward model served over gRPC (RewardService), and who calls it."""

from __future__ import annotations

from pydantic import Field, SecretStr, SerializationInfo, field_serializer

from trimtab.config.base import REVEAL_SECRETS, Section


class RewardServiceConfig(Section):
    """The RewardService process: which reward version it serves, where, and its limits."""

    version: str | None = Field(
        default=None, description="The reward version of the registry to serve (or `trimtab reward --version`)."
    )
    host: str = Field(default="127.0.0.1", description="Bind address of the gRPC server.")
    port: int = Field(default=50053, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    max_answers: int = Field(default=256, ge=1, description="Most answers one Score call may carry.")
    max_chars: int = Field(
        default=32_000, ge=1, description="Longest prompt plus response of one answer, in characters."
    )
    batch_size: int = Field(default=32, ge=1, description="Answers per forward pass of the reward model.")
    drain_grace_s: float = Field(default=10.0, ge=0, description="Seconds in-flight calls get to finish on SIGTERM.")
    client_key: SecretStr | None = Field(
        default=None,
        description="The API key callers present (the RL trainer's grpc:// reward, serving's served reward) when"
        " the service's auth is on; better set from the environment (TRIMTAB_REWARD_SERVICE__CLIENT_KEY)."
        " Shown as ********** wherever the config is printed or saved.",
    )
    call_timeout_s: float = Field(default=120.0, gt=0, description="The RL trainer's deadline for each Score call.")

    @field_serializer("client_key", when_used="json")
    def _masked(self, key: SecretStr | None, info: SerializationInfo) -> str | None:
        """Masked when printed; in full only in a config handed to a child process (`handoff`)."""
        if key is None:
            return None
        return key.get_secret_value() if (info.context or {}).get(REVEAL_SECRETS) else str(key)


class ServedRewardConfig(Section):
    """Serving scores a share of its answers with a RewardService, off the reply path: the
    `trimtab.serving.served_reward_sum` / `served_reward_scored` by version: the mean score of its answers (a
    reward signal that needs no gold judge)."""

    address: str | None = Field(default=None, description="host:port of a RewardService; None: off.")
    share: float = Field(
        default=0.1, gt=0, le=1, description="Share of answers scored (a stable hash of the response id)."
    )
    timeout_s: float = Field(
        default=10.0, gt=0, description="Deadline of each Score call (batches: reward_service.max_answers)."
    )
    max_pending: int = Field(
        default=256, ge=1, description="Answers waiting to be scored at most; more are skipped (and counted)."
    )
