"""For the online learner's tests: FeedbackEvents as the feedback service writes them (on a made-up
served record), the settings of a small learner on the test run's stack, events produced straight onto its
topic, and what its published lineage trained."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from trimtab.config import TrimtabConfig
from trimtab.events import event_producer, send_event
from trimtab.registry import FEEDBACK_IDS, Registry
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


def produce(config: TrimtabConfig, n: int) -> dict[str, list[str]]:
    """n events on tiny-model-sized answers, straight onto the feedback topic, their ids by kind: every
    fifth a pair, every seventh (not a pair) a rating, the rest thumbs (half up)."""
    producer = event_producer(config.kafka, "test")
    ids: dict[str, list[str]] = {"thumb": [], "pairwise": [], "rating": []}
    for i in range(n):
        good = i % 2 == 1
        if i % 5 == 0:
            label = feedback_pb2.FeedbackLabel(pairwise=feedback_pb2.Pairwise(
                chosen_response_id="res_0", rejected_response_id="res_1"))  # fmt: skip
        elif i % 7 == 0:
            label = feedback_pb2.FeedbackLabel(rating=5 if good else 1)
        else:
            label = feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP if good else feedback_pb2.THUMB_DOWN)
        event = feedback(label)
        event.user_id = f"user{i % 5}"
        event.served.prompt.chat.messages[0].content = f"What is {i % 7} plus {i % 3}?"
        event.served.candidates[0].reply.text = f"It is {i % 7 + i % 3}." if good else "No idea, go away."
        ids[str(label.WhichOneof("kind"))].append(event.feedback_id)
        send_event(producer, config.kafka.topics.feedback.name, event.served.request_id, event).get(timeout=10)
    producer.flush()
    producer.close()
    return ids


def lineage_ids(registry: Registry, last: str) -> list[str]:
    """The feedback ids trained along the lineage ending at `last` (through its own algorithm's versions)."""
    ids: list[str] = []
    version: str | None = last
    algorithm = registry.get(last).algorithm
    while version is not None:
        manifest = registry.get(version)
        if manifest.algorithm != algorithm:
            break
        ids += json.loads((registry.path(version) / FEEDBACK_IDS).read_text())
        version = manifest.parent
    return ids


def newest_checkpoint(directory: Path) -> int:
    return max((int(p.name.removeprefix("step-")) for p in directory.glob("step-*")), default=0)
