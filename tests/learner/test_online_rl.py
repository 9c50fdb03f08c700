"""RL on live traffic inside the online learner: after a round's thumbs are trained, GRPO steps on the
prompts that feedback was given on, answered anew by a rollout engine refitted to the round's policy and
scored by the configured reward; the version records the steps. With the learner's own reward model as
the reward, the phase waits until that model may judge (real broker and Redis, one in-process rank, the
tiny model and its vLLM engine)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from rich.console import Console

from learner.online.loop import OnlineRequest, run_online
from learner.online.memory import LearnerMemory
from tests.learner import rl_judges
from tests.learner.online_support import feedback, small_learner_env
from tests.learner.tiny import make_tiny_model
from trimtab.app.stack.topics import ensure_topics
from trimtab.config import TrimtabConfig, load_config
from trimtab.events import event_producer, send_event
from trimtab.registry import Manifest, Registry
from trimtab.v1 import feedback_pb2

pytestmark = pytest.mark.integration
THUMBS = 8


def one_round(stack: TrimtabConfig, tmp_path: Path, reward: str) -> tuple[LearnerMemory, Manifest]:
    environ = small_learner_env(stack, tmp_path, partitions=1) | {
        "TRIMTAB_LEARNER__ONLINE__ROUND__EXAMPLES": str(THUMBS),
        "TRIMTAB_LEARNER__ONLINE__MAX_ROUNDS": "1",
        "TRIMTAB_LEARNER__ONLINE__RL__ALGORITHM": "grpo",
        "TRIMTAB_LEARNER__ONLINE__RL__STEPS": "2",
        "TRIMTAB_LEARNER__ONLINE__RL__REWARD": reward,
        "TRIMTAB_LEARNER__RL__ROLLOUT__PROMPTS_PER_STEP": "2",
        "TRIMTAB_LEARNER__RL__ROLLOUT__GROUP_SIZE": "2",
        "TRIMTAB_LEARNER__RL__ROLLOUT__MAX_TOKENS": "8",
        "TRIMTAB_ENGINE__MAX_MODEL_LEN": "128",  # the tiny model's positions
    }
    config = load_config(path=None, environ=environ)
    ensure_topics(config.kafka)
    producer = event_producer(config.kafka, "test")
    for i in range(THUMBS):
        event = feedback(feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP if i % 2 else feedback_pb2.THUMB_DOWN))
        event.user_id = f"user{i}"
        event.served.prompt.chat.messages[0].content = f"What is {i % 4} plus 2?"  # four live prompts
        send_event(producer, config.kafka.topics.feedback.name, event.feedback_id, event).get(timeout=10)
    producer.close()
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        memory = run_online(config, OnlineRequest(make_tiny_model(tmp_path / "model")), Console(quiet=True))
    finally:  # the learner stops on SIGTERM/SIGINT; give pytest its handlers back
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    policy = [m for m in Registry(config.registry.root).versions() if m.algorithm == "online"]
    return memory, policy[-1]


def test_grpo_steps_on_the_rounds_live_prompts_follow_its_feedback(stack: TrimtabConfig, tmp_path: Path) -> None:
    rl_judges.SEEN.clear()
    memory, version = one_round(stack, tmp_path, reward="tests.learner.rl_judges:remembering")
    assert memory.rounds == 1 and memory.rl_steps == 2
    # 2 steps x 2 prompts x 2 answers, drawn from exactly the prompts the round's feedback was given on
    assert len(rl_judges.SEEN) == 8 and set(rl_judges.SEEN) == {f"What is {i} plus 2?" for i in range(4)}
    metrics = version.metrics
    assert metrics["rl/response_tokens_mean"] > 0 and metrics["rl/kl_per_sequence"] != 0.0
    assert metrics["rl/engine_logp_drift_mean"] < 1e-3  # the engine served the round's adapter, refitted
    assert "kto/loss" in metrics and version.event_counts["kto"] == THUMBS  # the feedback trained first


def test_with_the_learners_own_reward_model_rl_waits_until_it_may_judge(stack: TrimtabConfig, tmp_path: Path) -> None:
    memory, version = one_round(stack, tmp_path, reward="reward_model")
    assert memory.rl_steps == 0 and version.metrics["rl/skipped"] == 1.0  # thumbs alone train no reward model
    assert not (tmp_path / "checkpoints" / "rollout.log").exists()  # and no rollout engine was started for nothing
