"""For the online learner's tests: FeedbackEvents as the feedback service writes them (on a made-up
served record), and the settings of a small learner on the test run's stack."""

from __future__ import annotations

import uuid
from pathlib import Path

from trimtab.config import TrimtabConfig
from trimtab.v1 import common_pb2, events_pb2, feedback_pb2, inference_pb2


def served(n: int = 2, version: str = "ver_a", logps: bool = True, text: str = "Hi") -> events_pb2.ResponseLogged:
    record = events_pb2.ResponseLogged(request_id="req_1", user_id="u1")
    record.prompt.chat.messages.append(common_pb2.ChatMessage(role="user", content=text))
    for i in range(n):
        candidate = events_pb2.CandidateRecord(
            reply=inference_pb2.Candidate(index=i, response_id=f"res_{i}", text=f"answer {i}", model_version=version)
        )
        if logps:
            candidate.token_logprobs.extend([-0.5, -0.25])
        record.candidates.append(candidate)
    return record


def feedback(
    label: feedback_pb2.FeedbackLabel, response_id: str = "res_0", **abuse: object
) -> events_pb2.FeedbackEvent:
    event = events_pb2.FeedbackEvent(event_id="fbk_1", feedback_id=f"fid-{uuid.uuid4().hex[:6]}", user_id="u1")
    event.response_id = response_id
    event.label.CopyFrom(label)
    event.served.CopyFrom(served())
    for key, value in abuse.items():
        setattr(event.abuse, key, value)
    return event


def small_learner_env(stack: TrimtabConfig, tmp_path: Path, partitions: int) -> dict[str, str]:
    """TRIMTAB_ settings of an online learner on its own topic, key prefix, registry and checkpoints, on
    the tiny model's scale (batches of 4, 2 anchors), gates and canary off."""
    return {
        "TRIMTAB_SUITE__KIND": "world",
        "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
        "TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": f"test.feedback.{uuid.uuid4().hex[:6]}",
        "TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS": str(partitions),
        "TRIMTAB_REDIS__URL": stack.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": f"{stack.redis.key_prefix}online-{uuid.uuid4().hex[:6]}:",
        "TRIMTAB_REGISTRY__ROOT": str(tmp_path / "registry"),
        "TRIMTAB_LEARNER__ONLINE__CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "TRIMTAB_LEARNER__ONLINE__ROUND__ANCHOR_EXAMPLES": "2",
        "TRIMTAB_LEARNER__ONLINE__BATCH_SIZE": "4",
        "TRIMTAB_LEARNER__ONLINE__GATES__ENABLED": "false",
        "TRIMTAB_LEARNER__ONLINE__CANARY__ENABLED": "false",
        "TRIMTAB_LEARNER__TRAIN__MICRO_BATCH_SIZE": "4",
    }
