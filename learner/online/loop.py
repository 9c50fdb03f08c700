"""`trimtab learn --online`, read top to bottom: set up (or resume), then rounds of
consume -> train -> publish -> gate -> canary -> checkpoint -> commit, until stopped.

Exactly once. A round's new items are trained, the result published, and only then is a checkpoint
written holding the weights, the optimiser, the stream positions and the untrained items together;
the positions are mirrored to the consumer group after that. A learner killed anywhere restarts from
its newest checkpoint: what it consumed after it is read again, what it trained after it is trained
again from the checkpoint's weights, so every event is in the lineage of the learner's versions
(each version's parent is the previous round's) exactly once. A version published by a round the
kill interrupted is an orphan outside that lineage, and the restarted round's version replaces it as
canary. Each version lists the feedback ids it trained on (`feedback_ids.json`).

The parts: the feedback source (`learner.online.source`), the heads that train and publish
(`learner.online.heads`: the policy and the optional reward model, in the same rounds and the same
checkpoint), RL on the round's live prompts (`learner.online.rl`, optional), the policy's candidate,
gated and handed to the canary judge (`learner.online.candidate`).
Values fixed for the run travel in `OnlineRun`; what must survive a restart in `LearnerMemory`.

Rank 0 alone reads the stream, publishes and talks to Redis; the item lists reach the other ranks by
broadcast, so every rank trains on the same data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from transformers import AutoTokenizer

from learner.checkpoint import Checkpointer
from learner.distributed import DistContext, init_distributed, shutdown
from learner.generation import Interrupted
from learner.offline import pad_token_id
from learner.online.canary import CanaryJudge
from learner.online.candidate import Anchors, publish_candidate, train_policy
from learner.online.exclusive import exclusive
from learner.online.gates import Gates
from learner.online.heads import Heads, load_heads, publish_reward_model
from learner.online.memory import LearnerMemory
from learner.online.rl import OnlineRL
from learner.online.rounds import Replay, plan_round
from learner.online.run import Meanwhile, OnlineRun, StopFlag
from learner.online.source import FeedbackSource
from learner.online.suite_check import check_suite
from learner.online.telemetry import LearnerTelemetry
from learner.online.training import by_head
from learner.online.version_events import VersionEvents
from learner.runtime import device_and_dtype, seed_everything
from trimtab.config import TrimtabConfig
from trimtab.registry import Registry
from trimtab.suite import load_suite
from trimtab.telemetry import setup_telemetry


@dataclass(frozen=True)
class OnlineRequest:
    model_dir: Path  # where the learner starts when it has no checkpoint


def run_online(
    config: TrimtabConfig,
    request: OnlineRequest,
    console: Console,
    telemetry: LearnerTelemetry | None = None,  # default: rank 0 installs providers from config.telemetry
) -> LearnerMemory:
    """Learn from the feedback topic until stopped; the learner's memory at the end."""
    context = init_distributed(config.learner)
    providers = None
    run: OnlineRun | None = None
    held = ExitStack()
    try:
        if context.is_main:  # one learner per checkpoint directory (learner.online.exclusive)
            held.enter_context(exclusive(config.learner.online.checkpoint_dir))
        if context.is_main and telemetry is None:
            providers = setup_telemetry(config.telemetry, "learner", config.tls)
        run = _start(config, request, console, context, telemetry or LearnerTelemetry())
        heads = load_heads(run)
        online = run.online
        checkpointer = Checkpointer(online.checkpoint_dir, _fingerprint(run, heads), context, online.keep_checkpoints)
        memory = _resume(run, checkpointer, heads)
        run.telemetry.resumed(memory.skipped)
        judge = CanaryJudge(config, run.telemetry, run.events) if context.is_main and online.canary.enabled else None
        with (
            closing(FeedbackSource(run, memory, judge)) as source,
            OnlineRL.started(run, heads.policy) as rl,
            _gates(run) as gates,
        ):
            run.meanwhile.set(source.catch_up)
            run.stop.install()
            try:
                learn(run, heads, memory, source, checkpointer, gates=gates, judge=judge, rl=rl)
            except Interrupted:
                # Stopped mid-round, before its checkpoint: the round's events are read and trained again
                # on restart, so nothing is lost or trained twice.
                console.print("online learner: stopped during a round; it will be redone on restart")
        return memory
    finally:
        if run is not None and run.events is not None:
            run.events.close()
        shutdown(context)
        if providers is not None:
            providers.shutdown()
        held.close()


def learn(
    run: OnlineRun,
    heads: Heads,
    memory: LearnerMemory,
    source: FeedbackSource,
    checkpointer: Checkpointer,
    *,
    gates: Gates | None,  # rank 0's
    judge: CanaryJudge | None,
    rl: OnlineRL | None,
) -> None:
    """Rounds, each on the new items the source hands every rank, until it stops or `run` is finished."""
    anchors = Anchors.of(run)
    for new in source.rounds():
        memory.rounds += 1
        started = time.monotonic()
        with run.telemetry.round(memory.rounds, len(new), len(memory.pending.items)):
            plan = plan_round(new, memory.replay, anchors.items, run.online.round, seed=memory.rounds)
            policy_items, reward_items = by_head(plan.by_algorithm)
            with run.telemetry.phase("train_policy"):
                policy = train_policy(run, heads.policy, policy_items, new, anchors, memory, rl)
            source.catch_up()
            if heads.reward_model is not None and reward_items:
                with run.telemetry.phase("train_reward_model"):
                    reward = heads.reward_model.train(run, reward_items, new, memory.rounds)
                with run.telemetry.phase("publish_reward_model"):
                    memory.reward_version = publish_reward_model(run, heads.reward_model, reward, memory)
                memory.reward_trained += len(reward.new)
                source.catch_up()
            memory.replay.add(new)
            memory.trained += len(new)
            memory.last_version = publish_candidate(run, heads.policy, policy, memory, gates=gates, judge=judge)
            memory.range_start = dict(memory.positions)
            source.catch_up()  # the candidate may start as the canary now, not after the checkpoint
            with run.telemetry.phase("checkpoint"):
                checkpointer.save(memory.rounds, heads.checkpointed, extra=memory.to_json())
            source.commit(memory.positions)
        if run.context.is_main:  # where a round's time goes: what sets how soon feedback reaches a version
            phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in run.telemetry.phases.items())
            run.console.print(f"round {memory.rounds}: {time.monotonic() - started:.1f} s ({phases})")
        if run.finished(memory):
            return


@contextmanager
def _gates(run: OnlineRun) -> Iterator[Gates | None]:
    """Rank 0's gates (None on the other ranks)."""
    if not run.context.is_main:
        yield None
        return
    with Gates.started(run.config, run.model_dir, log=run.online.checkpoint_dir / "gates.log") as gates:
        yield gates


def _start(
    config: TrimtabConfig, request: OnlineRequest, console: Console, context: DistContext, telemetry: LearnerTelemetry
) -> OnlineRun:
    _, dtype = device_and_dtype(config.learner)
    seed_everything(config.learner.train.seed)
    suite = load_suite(config)
    check_suite(config, suite)
    tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
    return OnlineRun(
        config=config,
        model_dir=request.model_dir,
        console=console,
        context=context,
        telemetry=telemetry,
        suite=suite,
        tokenizer=tokenizer,
        pad_id=pad_token_id(tokenizer),
        dtype=dtype,
        stop=StopFlag(),
        events=VersionEvents(config, telemetry) if context.is_main else None,
        meanwhile=Meanwhile(),
    )


def _fingerprint(run: OnlineRun, heads: Heads) -> dict[str, object]:
    """Which run a checkpoint belongs to: one of another model, adapter shape or topic is never resumed."""
    return {
        "model_dir": str(run.model_dir.resolve()),
        "lora": heads.policy.lora.model_dump(mode="json"),
        "topic": run.config.kafka.topics.feedback.name,
        "reward_model": heads.reward_model.lora.model_dump(mode="json") if heads.reward_model else None,
    }


def _resume(run: OnlineRun, checkpointer: Checkpointer, heads: Heads) -> LearnerMemory:
    """The newest checkpoint's memory, its weights and optimisers restored into `heads`; without one, a fresh
    memory whose lineage starts at the model it was given (imported into the registry)."""
    found = checkpointer.latest()
    if found is None:
        memory = LearnerMemory(replay=Replay(run.online.round.replay_capacity, run.config.learner.train.seed))
        if run.context.is_main:
            memory.last_version = Registry(run.config.registry.root).import_once(run.model_dir).id
        return memory
    checkpointer.restore(found, heads.checkpointed)
    if run.context.is_main:
        run.console.print(f"online learner: resuming after round {found.step} ({found.path})")
    return LearnerMemory.from_json(found.extra)
