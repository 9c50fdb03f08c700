"""`trimtab learn --online`: read top to bottom: set up (or resume), then rounds of
consume -> train -> publish -> gate -> canary -> checkpoint -> commit, until stopped.

Exactly once. A round's new items are trained, the result published, and only then is a checkpoint
written holding the weights, the optimiser, the stream positions and the untrained items together;
the positions are mirrored to the consumer group after that. A learner killed anywhere restarts from
its newest checkpoint: what it consumed after it is read again, what it trained after it is trained
again from the checkpoint's weights, so every event is in the lineage of the learner's versions
(each version's parent is the previous round's) exactly once. A version published by a round the
kill interrupted is an orphan outside that lineage, and the restarted round's version replaces it as
canary. Each version lists the feedback ids it trained on (`feedback_ids.json`).

The reward model (ratings and pairs, `learner.online.mix`) trains in the same rounds, is saved in the
same checkpoint (`TrainingState.companion`) and publishes a `reward` version per round it trained; once
it has trained on enough feedback it scores the held-out reward gate (`learner.online.gates`).

Rank 0 alone reads the stream, publishes and talks to Redis; the item lists reach the other ranks by
broadcast, so every rank trains on the same data.
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Literal, TypeVar

import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn
from transformers import AutoTokenizer

from learner.checkpoint import Checkpointer, TrainingState
from learner.data import Record, TrainExample, tokenize_records
from learner.distributed import DistContext, full_state_dict, init_distributed, shutdown
from learner.engine import OnStep
from learner.generation import Interrupted
from learner.models import export, load_trainable
from learner.offline import pad_token_id
from learner.online.canary import CanaryJudge
from learner.online.gates import GateCandidate, GateVerdict, check_suite, run_gates
from learner.online.items import Item, ItemFactory, anchor_items
from learner.online.memory import LearnerMemory
from learner.online.rounds import Replay, plan_round
from learner.online.stream import FeedbackStream
from learner.online.telemetry import LearnerTelemetry
from learner.online.training import (
    anchor_loss,
    by_head,
    online_lora,
    online_optimizer,
    train_round,
    trains_reward_model,
)
from learner.runtime import device_and_dtype, seed_everything
from trimtab.config import TrimtabConfig
from trimtab.registry import Manifest, OffsetRange, Registry
from trimtab.registry.commands import with_pointers
from trimtab.suite import load_suite
from trimtab.telemetry import setup_telemetry

log = logging.getLogger(__name__)
T = TypeVar("T")
STOPPED = "<stopped>"  # broadcast instead of a version id when rank 0 was stopped mid-round
FEEDBACK_IDS = "feedback_ids.json"  # in each version: the feedback the round trained (new items only)
REWARD_MODEL_ALGORITHM = "online_reward_model"  # the reward model's versions (the policy's: "online")


@dataclass(frozen=True)
class OnlineRequest:
    model_dir: Path  # where the learner starts when it has no checkpoint


class OnlineLearner:
    def __init__(
        self,
        config: TrimtabConfig,
        request: OnlineRequest,
        console: Console,
        telemetry: LearnerTelemetry | None = None,  # default: rank 0 installs providers from config.telemetry
    ) -> None:
        self.config = config
        self._given_telemetry = telemetry
        self.online = config.learner.online
        self.request = request
        self.console = console
        self.stopping = False
        self.lora = online_lora(config.learner)
        self.reward_lora = config.learner.lora.model_copy(update={"enabled": self.online.reward_model.adapter})

    def run(self) -> LearnerMemory:
        learner = self.config.learner
        context = init_distributed(learner)
        providers = None
        try:
            if context.is_main and self._given_telemetry is None:
                providers = setup_telemetry(self.config.telemetry, "learner")
            self.telemetry = self._given_telemetry or LearnerTelemetry()
            _, dtype = device_and_dtype(learner)
            seed_everything(learner.train.seed)
            self.suite = load_suite(self.config)
            check_suite(self.config, self.suite)
            self.tokenizer = AutoTokenizer.from_pretrained(self.request.model_dir)
            self.pad_id = pad_token_id(self.tokenizer)
            reward_model = (
                self._trainable(context, dtype, reward_model=True, lr=self.online.reward_model.lr)
                if self.online.mix.trains_reward_model
                else None
            )
            state = replace(
                self._trainable(context, dtype, reward_model=False, lr=self.online.lr), companion=reward_model
            )
            checkpointer = Checkpointer(
                self.online.checkpoint_dir, self._fingerprint(), context, self.online.keep_checkpoints
            )
            memory = self._resume(checkpointer, state, context)
            self.telemetry.resumed(memory.skipped)
            stream = (
                FeedbackStream(self.config.kafka, self.online.group_id, memory.positions) if context.is_main else None
            )
            self._install_signal_handlers()
            try:
                self._rounds(context, state, checkpointer, memory, stream)
            except Interrupted:
                # Stopped mid-round, before its checkpoint: the round's events are read and trained again
                # on restart, so nothing is lost or trained twice.
                self.console.print("online learner: stopped during a round; it will be redone on restart")
            finally:
                if stream is not None:
                    stream.close()
            return memory
        finally:
            shutdown(context)
            if providers is not None:
                providers.shutdown()

    def _trainable(self, context: DistContext, dtype: torch.dtype, *, reward_model: bool, lr: float) -> TrainingState:
        """The policy, or the reward model (the same backbone with a scalar head), with its optimiser."""
        model = load_trainable(
            self.request.model_dir,
            reward_model=reward_model,
            lora=self.reward_lora if reward_model else self.lora,
            context=context,
            dtype=dtype,
            pad_token_id=self.pad_id,
        )
        return TrainingState(model, *online_optimizer(model, self.config.learner, lr))

    def _fingerprint(self) -> dict[str, object]:
        return {
            "model_dir": str(self.request.model_dir.resolve()),
            "lora": self.lora.model_dump(mode="json"),
            "topic": self.config.kafka.topics.feedback.name,
            "reward_model": self.reward_lora.model_dump(mode="json") if self.online.mix.trains_reward_model else None,
        }

    def _resume(self, checkpointer: Checkpointer, state: TrainingState, context: DistContext) -> LearnerMemory:
        found = checkpointer.latest()
        if found is None:
            memory = LearnerMemory(replay=Replay(self.online.round.replay_capacity, self.config.learner.train.seed))
            memory.last_version = (
                Registry(self.config.registry.root).import_once(self.request.model_dir).id if context.is_main else None
            )
            return memory
        checkpointer.restore(found, state)
        if context.is_main:
            self.console.print(f"online learner: resuming after round {found.step} ({found.path})")
        return LearnerMemory.from_json(found.extra)

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True  # finish the round in hand, checkpoint, exit

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _rounds(
        self,
        context: DistContext,
        state: TrainingState,
        checkpointer: Checkpointer,
        memory: LearnerMemory,
        stream: FeedbackStream | None,
    ) -> None:
        # The factory counts into the memory's own dict, so the counts travel with every checkpoint.
        factory = ItemFactory(self.online.mix, self.config.guardrails.feedback_filter, memory.skipped)
        anchors = anchor_items(self.suite.anchors[: self.online.round.anchor_examples])
        anchor_examples = self._anchor_examples(anchors)
        judge = CanaryJudge(self.config, self.telemetry) if context.is_main and self.online.canary.enabled else None
        while True:
            new = self._collect(context, memory, stream, factory, judge)
            if new is None:
                return
            memory.rounds += 1
            with self.telemetry.round(memory.rounds, len(new), len(memory.pending.items)):
                plan = plan_round(new, memory.replay, anchors, self.online.round, seed=memory.rounds)
                micro = self.config.learner.train.micro_batch_size
                policy_items, reward_items = by_head(plan.by_algorithm)
                policy_new = _trained_by(new, policy_items)
                with self.telemetry.phase("train_policy"):
                    before = anchor_loss(state.model, anchor_examples, micro, context, self.pad_id)
                    metrics = self._train(state, policy_items, context, memory.rounds)
                    after = anchor_loss(state.model, anchor_examples, micro, context, self.pad_id)
                self.telemetry.trained("policy", _counts(policy_new, "policy"), metrics)
                if state.companion is not None and reward_items:
                    reward_new = _trained_by(new, reward_items)
                    with self.telemetry.phase("train_reward_model"):
                        reward_metrics = self._train(state.companion, reward_items, context, memory.rounds)
                    self.telemetry.trained("reward_model", _counts(reward_new, "reward_model"), reward_metrics)
                    with self.telemetry.phase("publish_reward_model"):
                        memory.reward_version = self._publish_reward_model(
                            context, state.companion, memory, reward_new, reward_metrics
                        )
                    memory.reward_trained += len(reward_new)
                memory.replay.add(new)
                memory.trained += len(new)
                try:
                    version = self._publish(context, state, memory, policy_new, metrics, (before, after), judge)
                except Interrupted:
                    version = STOPPED  # rank 0 only: the other ranks learn it from the broadcast
                version = _broadcast(version)
                if version == STOPPED:
                    raise Interrupted("stopped while gating the round")
                memory.last_version = version
                memory.range_start = dict(memory.positions)
                with self.telemetry.phase("checkpoint"):
                    checkpointer.save(memory.rounds, state, extra=memory.to_json())
                if stream is not None:
                    stream.commit(memory.positions)
            if (self.online.max_rounds and memory.rounds >= self.online.max_rounds) or self.stopping:
                return

    def _train(
        self, state: TrainingState, by_algorithm: dict[str, list[Item]], context: DistContext, round_number: int
    ) -> dict[str, float]:
        return train_round(
            state.model, by_algorithm, self.tokenizer, state.optimizer, state.scheduler,
            self.config.learner, context, self.pad_id, self._on_step(context), seed=round_number,
        )  # fmt: skip

    def _collect(
        self,
        context: DistContext,
        memory: LearnerMemory,
        stream: FeedbackStream | None,
        factory: ItemFactory,
        judge: CanaryJudge | None,
    ) -> list[Item] | None:
        """Rank 0 reads until a round is due and hands every rank its new items; None: stop."""
        new: list[Item] | None = None
        if stream is not None:
            new = self._read_until_due(memory, stream, factory, judge)
        return _broadcast(new)

    def _read_until_due(
        self, memory: LearnerMemory, stream: FeedbackStream, factory: ItemFactory, judge: CanaryJudge | None
    ) -> list[Item] | None:
        round_config = self.online.round
        started = last_event = time.monotonic()
        while not self.stopping:
            for consumed in stream.poll(timeout_s=0.5, max_records=500):
                last_event = time.monotonic()
                self.telemetry.consumed(consumed.event.label.WhichOneof("kind") or "none", consumed.context)
                if judge is not None:
                    judge.observe(consumed.event)
                memory.admit(consumed.event, factory)
            memory.positions = dict(stream.positions)
            self.telemetry.waiting(len(memory.pending.items), memory.skipped | {"undecodable": stream.undecodable})
            if judge is not None:
                # Before the round check: feedback that arrived while the last round trained makes the next
                # one due at once, and a judge consulted only while waiting would then never decide.
                judge.decide()
            waited = time.monotonic() - started
            ready = len(memory.pending.items)
            if ready >= round_config.examples or (
                waited >= round_config.seconds and ready >= round_config.min_examples
            ):
                # Everything that waits (up to max_examples): feedback arrives while a round trains and
                # gates, and taking only `examples` would let the backlog, and so the staleness, grow.
                return memory.pending.take(round_config.max_examples, round_config.max_user_share)
            idle = self.online.stop_when_idle_s
            if idle and time.monotonic() - last_event >= idle:
                # Idle: train what is left (if anything) before stopping, so nothing consumed waits forever.
                return memory.pending.take(round_config.max_examples, 1.0) or None
        return None

    def _publish(
        self,
        context: DistContext,
        state: TrainingState,
        memory: LearnerMemory,
        new: Sequence[Item],
        metrics: dict[str, float],
        anchor: tuple[float, float],
        judge: CanaryJudge | None,
    ) -> str | None:
        """Export the round's weights, gate them, publish them with the gates' numbers, hand them to the
        canary judge; the version id (rank 0; None elsewhere)."""
        with self.telemetry.phase("gather_weights"):
            weights = full_state_dict(state.model)  # every rank takes part in the gather
        if not context.is_main:
            return None
        lora = self.lora
        registry = Registry(self.config.registry.root)
        with tempfile.TemporaryDirectory(prefix="trimtab-online-") as scratch:
            with self.telemetry.phase("export"):
                out = self._export(weights, state.model, Path(scratch), new, reward_model=False)
            with self.telemetry.phase("gate"):
                verdict = self._gate(registry, out, anchor, self._reward_judge(memory))
            base = registry.import_once(self.request.model_dir).id if lora.enabled else None
            with self.telemetry.phase("publish"):
                manifest = self._publish_version(
                    registry,
                    out,
                    memory,
                    parent=memory.last_version,
                    base=base,
                    algorithm="online",
                    counts=_counts(new, "policy") | {f"skipped_{reason}": n for reason, n in memory.skipped.items()},
                    metrics=metrics | verdict.numbers,
                    # The learner's newest reward model: it scored the gate once it was ready.
                    config={"reward_model": memory.reward_version},
                )
        outcome = "gates_off" if not self.online.gates.enabled else "passed" if verdict.passed else "refused"
        said = "passed the gates" if verdict.passed else "refused: " + "; ".join(verdict.reasons)
        said += "".join(f"; {note}" for note in verdict.notes)
        if outcome == "gates_off":
            said = "gates off"
        self.console.print(f"round {memory.rounds}: {len(new)} new items -> {manifest.id} ({said})")
        self.telemetry.round_done(manifest.id, outcome, [item.accepted_at for item in new])
        if judge is not None:
            judge.candidate(manifest.id, verdict.passed, verdict.reasons, verdict.numbers)
        return manifest.id

    def _publish_reward_model(
        self,
        context: DistContext,
        state: TrainingState,
        memory: LearnerMemory,
        new: Sequence[Item],
        metrics: dict[str, float],
    ) -> str | None:
        """Publish the reward model after its round (a `reward` version: never served, the gate's judge);
        its id (rank 0; None elsewhere). Its lineage, like the policy's, lists each round's feedback."""
        weights = full_state_dict(state.model)  # every rank takes part in the gather
        if not context.is_main:
            return None
        registry = Registry(self.config.registry.root)
        with tempfile.TemporaryDirectory(prefix="trimtab-online-rm-") as scratch:
            out = self._export(weights, state.model, Path(scratch), new, reward_model=True)
            manifest = self._publish_version(
                registry,
                out,
                memory,
                parent=memory.reward_version,
                base=None,
                algorithm=REWARD_MODEL_ALGORITHM,
                counts=_counts(new, "reward_model"),
                metrics=metrics,
            )
        self.console.print(f"round {memory.rounds}: reward model trained on {len(new)} new items -> {manifest.id}")
        return manifest.id

    def _publish_version(
        self,
        registry: Registry,
        out: Path,
        memory: LearnerMemory,
        *,
        parent: str | None,
        base: str | None,
        algorithm: str,
        counts: dict[str, int],
        metrics: dict[str, float],
        config: dict[str, object] | None = None,
    ) -> Manifest:
        """Publish `out` with what every version of this learner records: its settings and round, the
        stream ranges it consumed, its event counts and its (finite) metrics."""
        return registry.publish(
            out,
            parent=parent,
            base=base,
            algorithm=algorithm,
            config={"learner": self.config.learner.model_dump(mode="json"), "round": memory.rounds} | (config or {}),
            data_source=self.config.kafka.topics.feedback.name,
            offsets=self._offsets(memory),
            event_counts=counts,
            metrics={k: v for k, v in metrics.items() if v == v},  # NaN (nothing measured) is left out
        )

    def _export(
        self,
        weights: dict[str, torch.Tensor],
        model: nn.Module,
        scratch: Path,
        new: Sequence[Item],
        *,
        reward_model: bool,
    ) -> Path:
        """A publishable directory: the weights (the policy as an adapter when LoRA; the reward model
        whole, merged if an adapter), the tokenizer, and the feedback ids of the round's new items."""
        out = scratch / ("reward_model" if reward_model else "candidate")
        out.mkdir()
        lora = self.reward_lora if reward_model else self.lora
        export(weights, model.config, out, reward_model=reward_model, lora=lora)
        self.tokenizer.save_pretrained(out)
        (out / FEEDBACK_IDS).write_text(json.dumps(sorted({item.feedback_id for item in new})))
        return out

    def _reward_judge(self, memory: LearnerMemory) -> Path | None:
        """The reward model the gate scores with: the newest published, once it has trained on enough."""
        if memory.reward_version is None or memory.reward_trained < self.online.reward_model.min_examples:
            return None
        return Registry(self.config.registry.root).path(memory.reward_version)

    def _gate(
        self, registry: Registry, candidate: Path, anchor: tuple[float, float], reward_model: Path | None
    ) -> GateVerdict:
        current = with_pointers(self.config, lambda p: p.read()).current
        current_dir = registry.path(current) if current else self.request.model_dir
        inputs = GateCandidate(
            candidate_dir=candidate,
            current_dir=current_dir,
            reference_dir=self.request.model_dir,
            anchor_loss_before=anchor[0],
            anchor_loss_after=anchor[1],
            reward_model_dir=reward_model,
        )
        return run_gates(self.config, inputs, should_stop=lambda: self.stopping)

    def _offsets(self, memory: LearnerMemory) -> list[OffsetRange]:
        topic = self.config.kafka.topics.feedback.name
        return [
            OffsetRange(topic=topic, partition=p, start=memory.range_start.get(p, 0), end=end)
            for p, end in sorted(memory.positions.items())
        ]

    def _anchor_examples(self, anchors: Sequence[Item]) -> list[TrainExample]:
        records = [Record(item.prompt, item.responses) for item in anchors]
        return tokenize_records(records, self.tokenizer, "sft", self.config.learner.train.max_length)

    def _on_step(self, context: DistContext) -> OnStep:
        """Rank 0 logs a line every learner.log_every_steps optimiser steps of a round."""
        every = self.config.learner.log_every_steps

        def on_step(step: int, examples: int, metrics: dict[str, float]) -> None:
            if context.is_main and step % every == 0:
                self.console.print(f"  step {step}: loss {metrics.get('loss', float('nan')):.4f}")

        return on_step


def _trained_by(items: Sequence[Item], by_algorithm: dict[str, list[Item]]) -> list[Item]:
    """The `items` that one of `by_algorithm`'s algorithms trains (a rating only the reward model's)."""
    return [item for item in items if not by_algorithm.keys().isdisjoint(item.algorithms)]


def _counts(items: Sequence[Item], head: Literal["policy", "reward_model"]) -> dict[str, int]:
    """Items per algorithm of one head (a pair counts for DPO in the policy's, for RM in the reward model's)."""
    counts: dict[str, int] = {}
    for item in items:
        for algorithm in item.algorithms:
            if trains_reward_model(algorithm) == (head == "reward_model"):
                counts[algorithm] = counts.get(algorithm, 0) + 1
    return counts


def _broadcast(value: T) -> T:
    """Rank 0's `value` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
