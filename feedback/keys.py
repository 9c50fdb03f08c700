"""Every Redis key the feedback service writes, in one place, under the deployment's key prefix.

Identities that come from clients (tenant, user id, response ids) are hashed into keys, so no
separator inside an id can make two identities share a key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PartitionKeys:
    """A feedback partition's keys: its floor and its index of accepted feedback_ids by offset."""

    floor: str
    accepted: str


class Keys:
    """Key names under `<redis.key_prefix>feedback:`."""

    def __init__(self, key_prefix: str) -> None:
        self._base = f"{key_prefix}feedback:"

    def submission(self, feedback_id: str) -> str:
        """The exactly-once ledger entry of one feedback_id (a hash)."""
        return f"{self._base}id:{feedback_id}"

    def floor(self, topic: str, partition: int) -> str:
        """An offset below which no future event of `partition` can land (highest acked offset + 1)."""
        return f"{self._base}floor:{topic}:{partition}"

    def partition(self, topic: str, partition: int) -> PartitionKeys:
        return PartitionKeys(self.floor(topic, partition), self.accepted(topic, partition))

    def accepted(self, topic: str, partition: int) -> str:
        """Accepted feedback_ids of `partition` scored by offset (a sorted set): what a lost log held."""
        return f"{self._base}accepted:{topic}:{partition}"

    def recovering(self, topic: str, partition: int) -> str:
        """Held by the one instance re-producing what the broker lost of `partition`."""
        return f"{self._base}recovering:{topic}:{partition}"

    def loss(self, topic: str, partition: int) -> str:
        """The recovery id of `partition`'s current loss, until it has all been written again."""
        return f"{self._base}loss:{topic}:{partition}"

    def epoch(self) -> str:
        """The ledger's epoch: set when it starts empty or is rebuilt; gone or replaced, Redis lost the ledger."""
        return f"{self._base}epoch"

    def rebuilding(self) -> str:
        """Held by the one instance rebuilding the ledger from the feedback topic (`feedback.redis_loss`)."""
        return f"{self._base}rebuilding"

    def user_rate(self, tenant: str, user_id: str) -> str:
        return f"{self._base}rate:user:{_digest(tenant, user_id)}"

    def key_rate(self, key_name: str) -> str:
        return f"{self._base}rate:key:{_digest(key_name)}"

    def vote(self, tenant: str, user_id: str, target: str) -> str:
        """The feedback_id of the user's latest vote on a target (second-vote rule)."""
        return f"{self._base}vote:{_digest(tenant, user_id, target)}"

    def training(self, tenant: str, user_id: str) -> str:
        """The user's trainable submissions in the training-cap window (a sorted set by time)."""
        return f"{self._base}train:{_digest(tenant, user_id)}"

    def population(self, target: str) -> str:
        """Every user's polarity on one response or pair, plus the up/down tallies."""
        return f"{self._base}pop:{_digest(target)}"

    def agreement(self, tenant: str, user_id: str) -> str:
        """The user's comparable votes (n) and agreements with the population (k)."""
        return f"{self._base}agree:{_digest(tenant, user_id)}"

    def flagged(self, tenant: str, user_id: str) -> str:
        """Set once when the user is first flagged, so the flagged-users metric counts users, not events."""
        return f"{self._base}flagged:{_digest(tenant, user_id)}"
