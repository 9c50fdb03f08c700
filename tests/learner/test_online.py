"""The online learner: which feedback trains as what, the round's guards, and exactly-once training
across SIGKILLs, proved by counting feedback ids along the published lineage (real broker, real Redis,
real torch.distributed, the tiny model)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from learner.distributed import DistContext
from learner.online.heads import REWARD_MODEL_ALGORITHM
from learner.online.items import Item, ItemFactory, Skipped
from learner.online.memory import LearnerMemory
from learner.online.rounds import Pending, Replay
from learner.online.run import OnlineRun
from learner.online.telemetry import LearnerTelemetry
from learner.online.training import importance_weights
from tests.learner.online_support import feedback, lineage_ids, newest_checkpoint, produce, small_learner_env
from tests.learner.tiny import make_tiny_model
from tests.metrics import Series, metric_points, series
from trimtab.app.stack.topics import ensure_topics
from trimtab.config import TrimtabConfig, load_config
from trimtab.config.online import FeedbackMix
from trimtab.registry import Registry
from trimtab.v1 import common_pb2, events_pb2, feedback_pb2

REPO = Path(__file__).resolve().parents[2]


def test_each_kind_of_feedback_becomes_the_configured_algorithms_item() -> None:
    factory = ItemFactory(FeedbackMix())
    pair = factory.build(feedback(feedback_pb2.FeedbackLabel(pairwise=feedback_pb2.Pairwise(
        chosen_response_id="res_1", rejected_response_id="res_0"))))  # fmt: skip
    assert isinstance(pair, Item) and pair.algorithms == ("dpo", "rm")  # the policy and the reward model
    assert pair.responses == ("answer 1", "answer 0") and pair.behaviour_logps == (-0.75, -0.75)
    down = factory.build(feedback(feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_DOWN)))
    assert isinstance(down, Item) and (down.algorithms, down.desirable, down.responses) == (
        ("kto",), False, ("answer 0",))  # fmt: skip
    fixed = factory.build(feedback(feedback_pb2.FeedbackLabel(correction="Better.")))
    assert isinstance(fixed, Item) and (fixed.algorithms, fixed.responses, fixed.behaviour_logps) == (
        ("sft",), ("Better.",), None)  # fmt: skip
    scored = factory.build(feedback(feedback_pb2.FeedbackLabel(attributes=common_pb2.SteerLMAttributes(helpfulness=4))))
    assert isinstance(scored, Item) and scored.algorithms == ("steerlm",)
    assert scored.prompt[0] == {"role": "system", "content": "attributes: helpfulness=4"}
    rated = factory.build(feedback(feedback_pb2.FeedbackLabel(rating=4)))
    assert isinstance(rated, Item) and (rated.algorithms, rated.responses, rated.target) == (
        ("rm_rating",), ("answer 0",), 0.75)  # fmt: skip
    policy_only = ItemFactory(FeedbackMix(rating="off", pairwise_reward_model=False))
    assert policy_only.build(feedback(feedback_pb2.FeedbackLabel(rating=4))) == Skipped("rating_not_trained")
    assert not policy_only.mix.trains_reward_model
    reward_only = ItemFactory(FeedbackMix(pairwise="off", rating="off"))  # pairs still train the reward model
    only_rm = reward_only.build(feedback(feedback_pb2.FeedbackLabel(pairwise=feedback_pb2.Pairwise(
        chosen_response_id="res_1", rejected_response_id="res_0"))))  # fmt: skip
    assert isinstance(only_rm, Item) and only_rm.algorithms == ("rm",) and reward_only.mix.trains_reward_model


def test_feedback_that_must_not_train_is_skipped_and_counted_and_weights_apply() -> None:
    factory = ItemFactory(FeedbackMix())
    tie = feedback_pb2.FeedbackLabel(pairwise=feedback_pb2.Pairwise(
        chosen_response_id="res_1", rejected_response_id="res_0", tie=True))  # fmt: skip
    thumb = feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP)
    assert factory.build(feedback(tie)) == Skipped("tie")
    assert factory.build(feedback(thumb, over_training_cap=True)) == Skipped("over_training_cap")
    assert factory.build(feedback(thumb, response_id="res_9")) == Skipped("unknown_response")
    assert factory.build(feedback(feedback_pb2.FeedbackLabel(rating=9))) == Skipped("rating_out_of_range")
    assert factory.counts == {"tie": 1, "over_training_cap": 1, "unknown_response": 1, "rating_out_of_range": 1}
    flagged = factory.build(feedback(thumb, weight=0.25))
    assert isinstance(flagged, Item) and flagged.weight == 0.25
    unflagged = factory.build(feedback(thumb))
    assert isinstance(unflagged, Item) and unflagged.weight == 1.0  # AbuseSignals.weight unset means 1


def test_a_thumb_up_on_a_response_a_rail_stopped_never_trains_as_positive() -> None:
    event = feedback(feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP))
    event.guardrails.violating_response_ids.append("res_0")
    flipped = ItemFactory(FeedbackMix(), "flip").build(event)
    assert isinstance(flipped, Item) and flipped.desirable is False
    assert ItemFactory(FeedbackMix(), "drop").build(event) == Skipped("rail_violation_dropped")


def test_the_latest_vote_wins_whichever_arrives_first() -> None:
    memory, factory = LearnerMemory(), ItemFactory(FeedbackMix())
    first = feedback(feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP))
    second = feedback(feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_DOWN))
    second.supersedes = first.feedback_id
    memory.admit(first, factory)
    memory.admit(second, factory)
    assert [i.feedback_id for i in memory.pending.items] == [second.feedback_id]
    late = LearnerMemory()
    late.admit(second, factory)
    late.admit(first, factory)  # the superseded vote arriving after its successor is not trained
    assert [i.feedback_id for i in late.pending.items] == [second.feedback_id]
    assert late.skipped["superseded_on_arrival"] == 1


def item(user: str, n: int = 0) -> Item:
    return Item(
        algorithms=("kto",),
        prompt=[{"role": "user", "content": "q"}],
        responses=(f"a{n}",),
        desirable=True,
        weight=1.0,
        user_id=user,
        feedback_id=f"{user}-{n}",
        versions=("v",),
        behaviour_logps=None,
    )


def test_no_user_exceeds_the_round_share_and_the_excess_waits_for_a_later_round() -> None:
    pending = Pending([item("loud", n) for n in range(8)] + [item(f"user{n}") for n in range(4)])
    taken = pending.take(limit=8, max_user_share=0.25)
    assert sum(i.user_id == "loud" for i in taken) == 2
    assert len(taken) == 6 and len(pending.items) == 6  # nothing dropped: 6 of "loud" wait
    assert {i.feedback_id for i in taken} | {i.feedback_id for i in pending.items} == {
        f"loud-{n}" for n in range(8)
    } | {f"user{n}-0" for n in range(4)}


def test_replay_keeps_a_bounded_uniform_sample_and_memory_survives_json() -> None:
    replay = Replay(capacity=10, seed=1)
    replay.add([item("u", n) for n in range(1000)])
    assert len(replay.items) == 10 and replay.seen == 1000
    assert max(int(i.feedback_id.split("-")[1]) for i in replay.items) > 100  # not just the first ten
    memory = LearnerMemory(positions={0: 5}, pending=Pending([item("a")]), replay=replay, rounds=3)
    again = LearnerMemory.from_json(json.loads(json.dumps(memory.to_json())))
    assert again == memory


def test_importance_weight_is_the_truncated_sequence_ratio() -> None:
    def pair(feedback_id: str, logps: tuple[float, float] | None) -> Item:
        return Item(
            algorithms=("dpo",),
            prompt=[],
            responses=("a", "b"),
            desirable=True,
            weight=1.0,
            user_id="u",
            feedback_id=feedback_id,
            versions=("v", "v"),
            behaviour_logps=logps,
        )

    items = [pair("f1", (-2.0, -3.0)), pair("f2", (-9.0, -9.0)), pair("f3", None)]
    reference = torch.tensor([[-2.5, -3.0], [-1.0, -1.0], [0.0, 0.0]])
    assert importance_weights(items, reference, clip=2.0) == pytest.approx([math.exp(-0.5), 2.0, 1.0])


def test_the_reward_gate_is_judged_by_the_configured_judge_and_says_when_it_cannot_be() -> None:
    from learner.online.gates import verdict

    measured = {
        "gate/anchor_loss_before": 1.0,
        "gate/anchor_loss_after": 1.0,
        "gate/candidate_kl": 0.5,
        "gate/candidate_reward": 1.2,  # the suite's judge: the candidate is better ...
        "gate/current_reward": 0.4,
    }
    by_model = {"gate/candidate_rm_reward": -0.3, "gate/current_rm_reward": 0.1}  # ... the reward model disagrees
    judged = load_config(environ={"TRIMTAB_LEARNER__ONLINE__GATES__REWARD_JUDGE": "reward_model"})
    refused = verdict(judged, measured | by_model)
    assert not refused.passed and refused.reasons == [
        "held-out reward-model reward 0.400 below current's, more than the tolerance 0.0 at 90% (stderr 0.000)"
    ]
    unjudged = verdict(judged, measured)  # no reward model ready yet: the other gates decide, and it says so
    assert unjudged.passed and unjudged.notes == [
        "held-out reward not judged: the reward model has not yet trained on 64 new examples"
    ]
    by_suite = load_config(environ={"TRIMTAB_LEARNER__ONLINE__GATES__REWARD_JUDGE": "suite"})
    assert verdict(by_suite, measured | by_model).passed
    no_judge = verdict(by_suite, {k: v for k, v in measured.items() if "reward" not in k})
    assert no_judge.passed and no_judge.notes == ["held-out reward not judged: the suite has no judge (suite.judge)"]


def test_the_reward_gate_refuses_only_a_drop_the_held_out_prompts_resolve() -> None:
    """Paired over the prompts: a drop of 0.2 with a standard error of 0.2 is noise at 90% (z 1.28) and
    passes; with a standard error of 0.1 it is not, and is refused; at confidence 0.5 the means alone
    decide, as before the bound."""
    from learner.online.gates import verdict

    measured = {
        "gate/anchor_loss_before": 1.0,
        "gate/anchor_loss_after": 1.0,
        "gate/candidate_kl": 0.5,
        "gate/candidate_reward": 0.6,
        "gate/current_reward": 0.8,
    }
    config = load_config(environ={"TRIMTAB_LEARNER__ONLINE__GATES__REWARD_JUDGE": "suite"})
    assert verdict(config, measured | {"gate/reward_difference_stderr": 0.2}).passed
    refused = verdict(config, measured | {"gate/reward_difference_stderr": 0.1})
    assert not refused.passed and "(stderr 0.100)" in refused.reasons[0]
    means_only = load_config(
        environ={
            "TRIMTAB_LEARNER__ONLINE__GATES__REWARD_JUDGE": "suite",
            "TRIMTAB_LEARNER__ONLINE__GATES__REWARD_CONFIDENCE": "0.5",
        }
    )
    assert not verdict(means_only, measured | {"gate/reward_difference_stderr": 0.2}).passed


def test_the_paired_standard_error_is_that_of_the_per_prompt_differences() -> None:
    from learner.online.gate_worker import paired_stderr

    # differences 1, 2, 3: sample std 1, over sqrt(3) prompts
    assert paired_stderr([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(1 / math.sqrt(3))
    assert paired_stderr([5.0, 5.0], [1.0, 1.0]) == 0.0  # a constant gain is certain, however large
    assert math.isnan(paired_stderr([1.0], [0.0]))


# Exactly once across SIGKILLs: the real thing.


def killed_after_a_new_checkpoint(process: subprocess.Popen[bytes], checkpoints: Path, rng: random.Random) -> bool:
    """SIGKILL `process` at a random moment after it has written one more checkpoint (False: it ended first)."""
    before = newest_checkpoint(checkpoints)
    deadline = time.monotonic() + 180
    while process.poll() is None and newest_checkpoint(checkpoints) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(rng.uniform(0.0, 1.5))  # anywhere in the next round: reading, training, publishing, saving
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


@pytest.mark.integration
def test_sigkilled_learner_resumes_and_trains_every_event_exactly_once(stack: TrimtabConfig, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")}
    env |= small_learner_env(stack, tmp_path, partitions=2) | {
        "TRIMTAB_LEARNER__ONLINE__ROUND__EXAMPLES": "6",
        "TRIMTAB_LEARNER__ONLINE__ROUND__MAX_EXAMPLES": "6",  # several rounds, so several places to be killed
        "TRIMTAB_LEARNER__ONLINE__STOP_WHEN_IDLE_S": "4",
        "OMP_NUM_THREADS": "1",
        # The one secret a learner holds: it must reach no log (what a crash prints included).
        "TRIMTAB_REWARD_SERVICE__CLIENT_KEY": f"learner-secret-{uuid.uuid4().hex}",
    }
    config = load_config(path=None, environ=env)
    ensure_topics(config.kafka)
    model = make_tiny_model(tmp_path / "model")
    ids = produce(config, 40)
    command = [sys.executable, "-m", "trimtab.app.cli", "learn", "--online", "--model", str(model)]
    rng, kills = random.Random(7), 0
    for attempt in range(12):
        log = tmp_path / f"learner-{attempt}.log"
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        if kills < 3 and killed_after_a_new_checkpoint(process, tmp_path / "checkpoints", rng):
            kills += 1
            continue
        assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
        break
    registry = Registry(tmp_path / "registry")
    policy = [v for v in registry.versions() if v.algorithm == "online"]
    reward = [v for v in registry.versions() if v.algorithm == REWARD_MODEL_ALGORITHM]
    assert kills >= 1
    # Every event once, none skipped, none twice: in the policy's lineage the thumbs and pairs, in the
    # reward model's (saved in the same checkpoints) the ratings and pairs.
    assert sorted(lineage_ids(registry, policy[-1].id)) == sorted(ids["thumb"] + ids["pairwise"])
    assert sorted(lineage_ids(registry, reward[-1].id)) == sorted(ids["rating"] + ids["pairwise"])
    assert {v.kind for v in reward} == {"reward"}
    logs = [log.read_text(errors="replace") for log in tmp_path.glob("learner-*.log")]
    assert len(logs) >= 2 and all(env["TRIMTAB_REWARD_SERVICE__CLIENT_KEY"] not in text for text in logs)


# The canary judge on the real Redis pointers and the real versions topic.


def on_version(version: str, labels: list[feedback_pb2.FeedbackLabel]) -> list[events_pb2.FeedbackEvent]:
    """One feedback event per label, each on an answer `version` served."""
    events = []
    for label in labels:
        event = feedback(label)
        event.served.candidates[0].reply.model_version = version
        events.append(event)
    return events


def thumbs(version: str, ups: int, downs: int) -> list[events_pb2.FeedbackEvent]:
    up, down = feedback_pb2.THUMB_UP, feedback_pb2.THUMB_DOWN
    return on_version(version, [feedback_pb2.FeedbackLabel(thumb=up if i < ups else down) for i in range(ups + downs)])


def judge_config(stack: TrimtabConfig, tmp_path: Path, **extra: str) -> TrimtabConfig:
    return load_config(
        path=None,
        environ=extra
        | {
            "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
            "TRIMTAB_REDIS__URL": stack.redis.url,
            "TRIMTAB_REDIS__KEY_PREFIX": f"{stack.redis.key_prefix}judge-{uuid.uuid4().hex[:6]}:",
            "TRIMTAB_REGISTRY__ROOT": str(tmp_path / "registry"),
            "TRIMTAB_LEARNER__ONLINE__CANARY__MIN_FEEDBACK": "40",
        },
    )


def judged(config: TrimtabConfig, events: list[events_pb2.FeedbackEvent]) -> tuple[str | None, str | None]:
    """(current, canary) after a judge, with ver_current serving and ver_canary as the canary for half the
    users, observed `events` and decided once."""
    from learner.online.canary import CanaryJudge
    from trimtab.registry.commands import with_pointers

    with_pointers(config, lambda p: p.promote("ver_current"))
    with_pointers(config, lambda p: p.set_canary("ver_canary", 0.5))
    judge = CanaryJudge(config)
    for event in events:
        judge.observe(event)
    judge.decide()
    after = with_pointers(config, lambda p: p.read())
    return after.current, after.canary


@pytest.mark.integration
@pytest.mark.parametrize(("canary_ups", "decision"), [(10, "rolled back"), (28, "promoted")])
def test_the_canary_is_rolled_back_when_worse_and_promoted_when_not(
    stack: TrimtabConfig, tmp_path: Path, canary_ups: int, decision: str
) -> None:
    from learner.online.canary import CanaryJudge
    from trimtab.registry.commands import with_pointers

    config = judge_config(stack, tmp_path)
    with_pointers(config, lambda p: p.promote("ver_current"))
    with_pointers(config, lambda p: p.set_canary("ver_canary", 0.5))
    reader = InMemoryMetricReader()
    judge = CanaryJudge(config, LearnerTelemetry(MeterProvider(metric_readers=[reader]).get_meter("test")))
    for event in thumbs("ver_current", 30, 10) + thumbs("ver_canary", canary_ups, 40 - canary_ups)[:39]:
        judge.observe(event)
    judge.decide()  # 39 canary thumbs: below min_feedback, no decision yet
    assert with_pointers(config, lambda p: p.read()).canary == "ver_canary"
    judge.observe(thumbs("ver_canary", 0, 1)[0] if canary_ups == 10 else thumbs("ver_canary", 1, 0)[0])
    judge.decide()
    after = with_pointers(config, lambda p: p.read())
    if decision == "rolled back":  # 10/40 vs 30/40: worse at 90%
        assert (after.current, after.canary) == ("ver_current", None)
    else:  # 29/40 vs 30/40: within the 0.05 margin
        assert (after.current, after.canary) == ("ver_canary", None)
    counted = "ROLLED_BACK" if decision == "rolled back" else "PROMOTED"
    assert metric_points(reader, "trimtab.learner.version_events") == {series(type=counted): 1}


@pytest.mark.integration
@pytest.mark.parametrize("max_feedback", [60, 1000])
def test_a_canary_still_undecided_at_max_feedback_is_rolled_back_as_inconclusive(
    stack: TrimtabConfig, tmp_path: Path, max_feedback: int
) -> None:
    """26/40 up against current's 30/40 is below it by more than the 0.05 margin but not worse at 90%: the
    judge waits. At 39/60 vs 45/60 it still could not say; with max_feedback 60 the canary is withdrawn
    then, without a cap it keeps its place."""
    from learner.online.canary import CanaryJudge
    from trimtab.registry.commands import with_pointers

    config = judge_config(stack, tmp_path, TRIMTAB_LEARNER__ONLINE__CANARY__MAX_FEEDBACK=str(max_feedback))
    with_pointers(config, lambda p: p.promote("ver_current"))
    with_pointers(config, lambda p: p.set_canary("ver_canary", 0.5))
    reader = InMemoryMetricReader()
    judge = CanaryJudge(config, LearnerTelemetry(MeterProvider(metric_readers=[reader]).get_meter("test")))
    for event in thumbs("ver_current", 30, 10) + thumbs("ver_canary", 26, 14):
        judge.observe(event)
    judge.decide()
    assert with_pointers(config, lambda p: p.read()).canary == "ver_canary"
    for event in thumbs("ver_current", 15, 5) + thumbs("ver_canary", 13, 7):
        judge.observe(event)
    judge.decide()
    after = with_pointers(config, lambda p: p.read())
    if max_feedback == 60:
        assert (after.current, after.canary) == ("ver_current", None)
        assert metric_points(reader, "trimtab.learner.version_events") == {series(type="ROLLED_BACK"): 1}
    else:
        assert (after.current, after.canary) == ("ver_current", "ver_canary")
        assert metric_points(reader, "trimtab.learner.version_events") == {}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("meanwhile", "after", "events"),
    [
        ("withdrawn", ("ver_current", None), {series(type="ROLLED_BACK"): 1}),
        ("promoted", ("ver_canary", None), {}),
        ("replaced", ("ver_current", "ver_newer"), {series(type="ROLLED_BACK"): 1}),
    ],
)
def test_a_roll_back_touches_only_its_own_canary_whatever_happened_since_the_judge_looked(
    stack: TrimtabConfig,
    tmp_path: Path,
    meanwhile: str,
    after: tuple[str | None, str | None],
    events: dict[Series, float],
) -> None:
    """Between the judge's look and its roll-back an operator may withdraw the canary, promote it or set a newer
    one, and a try whose reply was lost in a Redis restart may have withdrawn it already: the learner goes on,
    the newer canary and the promoted current stay, and a version no longer serving is reported rolled back."""
    from learner.online.canary import CanaryJudge
    from trimtab.registry.commands import with_pointers

    config = judge_config(stack, tmp_path)
    with_pointers(config, lambda p: p.promote("ver_current"))
    with_pointers(config, lambda p: p.set_canary("ver_canary", 0.5))
    reader = InMemoryMetricReader()
    judge = CanaryJudge(config, LearnerTelemetry(MeterProvider(metric_readers=[reader]).get_meter("test")))
    for event in thumbs("ver_current", 30, 10) + thumbs("ver_canary", 10, 30):
        judge.observe(event)
    operator = {
        "withdrawn": lambda p: p.clear_canary(),
        "promoted": lambda p: p.promote("ver_canary"),
        "replaced": lambda p: p.set_canary("ver_newer", 0.5),
    }[meanwhile]
    with_pointers(config, operator)  # after the judge's look, before its roll-back
    judge._judge("ver_canary", "ver_current")  # 10/40 vs 30/40: worse, rolled back
    now = with_pointers(config, lambda p: p.read())
    assert (now.current, now.canary) == after
    assert metric_points(reader, "trimtab.learner.version_events") == events


@pytest.mark.integration
@pytest.mark.parametrize(("weight", "decision"), [(1.0, "rolled back"), (0.1, "promoted")])
def test_flagged_users_thumbs_count_at_their_abuse_weight(
    stack: TrimtabConfig, tmp_path: Path, weight: float, decision: str
) -> None:
    """40 thumbs down on the canary from users the feedback service flagged (weight 0.1) beside honest
    users' 31 up / 9 down: counted at their weight the canary is within the margin of current's 30/10;
    counted in full (weight 1) they would roll it back."""
    flagged = thumbs("ver_canary", 0, 40)
    for event in flagged:
        event.abuse.user_flagged, event.abuse.weight = True, weight
    after = judged(judge_config(stack, tmp_path), thumbs("ver_current", 30, 10) + thumbs("ver_canary", 31, 9) + flagged)
    assert after == (("ver_current", None) if decision == "rolled back" else ("ver_canary", None))


def test_a_verdict_is_a_thumb_a_decisive_rating_or_helpfulness_score_and_nothing_else() -> None:
    from functools import partial

    from learner.online.canary import verdict

    up, down = feedback_pb2.THUMB_UP, feedback_pb2.THUMB_DOWN
    Label = feedback_pb2.FeedbackLabel
    every = partial(verdict, ratings=True, helpfulness=True)
    assert [every(Label(thumb=t)) for t in (up, down)] == [True, False]
    assert [every(Label(rating=r)) for r in (1, 2, 3, 4, 5)] == [False, False, None, True, True]
    assert [verdict(Label(rating=r), ratings=False, helpfulness=True) for r in (1, 5)] == [None, None]
    assert verdict(Label(thumb=up), ratings=False, helpfulness=False) is True

    def scores(**values: int) -> feedback_pb2.FeedbackLabel:
        return Label(attributes=common_pb2.SteerLMAttributes(**values))

    assert [every(scores(helpfulness=h, toxicity=0)) for h in range(5)] == [False, False, None, True, True]
    assert every(scores(correctness=4, coherence=4)) is None  # no helpfulness score: no verdict
    assert verdict(scores(helpfulness=4), ratings=True, helpfulness=False) is None
    pair = Label(pairwise=feedback_pb2.Pairwise(chosen_response_id="res_0", rejected_response_id="res_1"))
    assert every(pair) is None  # two answers of one version: no verdict between versions
    assert every(Label(correction="Better.")) is None


def ratings(version: str, values: list[int]) -> list[events_pb2.FeedbackEvent]:
    return on_version(version, [feedback_pb2.FeedbackLabel(rating=value) for value in values])


@pytest.mark.integration
@pytest.mark.parametrize("counted", [True, False])
def test_ratings_are_verdicts_too_four_and_five_up_one_and_two_down_three_neither(
    stack: TrimtabConfig, tmp_path: Path, counted: bool
) -> None:
    """With `canary.ratings` (the default) 20 thumbs and 20 decisive ratings a side make the 40 verdicts a
    decision needs (the 3s count for nothing): the canary's 29/40 up vs current's 30/40 is promoted.
    With ratings off, the 20 thumbs a side are not yet enough."""
    config = judge_config(stack, tmp_path, TRIMTAB_LEARNER__ONLINE__CANARY__RATINGS=str(counted).lower())
    current = thumbs("ver_current", 15, 5) + ratings("ver_current", [5] * 10 + [4] * 5 + [2] * 3 + [1] * 2 + [3] * 9)
    canary = thumbs("ver_canary", 15, 5) + ratings("ver_canary", [4] * 14 + [1] * 6 + [3] * 9)
    assert judged(config, current + canary) == (("ver_canary", None) if counted else ("ver_current", "ver_canary"))


def helpfulness_scores(version: str, values: list[int]) -> list[events_pb2.FeedbackEvent]:
    scores = [common_pb2.SteerLMAttributes(helpfulness=value) for value in values]
    return on_version(version, [feedback_pb2.FeedbackLabel(attributes=score) for score in scores])


@pytest.mark.integration
@pytest.mark.parametrize("counted", [True, False])
def test_helpfulness_scores_are_verdicts_too_and_can_roll_a_canary_back(
    stack: TrimtabConfig, tmp_path: Path, counted: bool
) -> None:
    """With `canary.helpfulness` (the default) 20 thumbs and 20 decisive helpfulness scores a side make the
    40 verdicts a decision needs (the 2s count for nothing): the canary's 12/40 up against current's 32/40
    rolls it back. With the scores off, the 20 thumbs a side are not yet enough."""
    config = judge_config(stack, tmp_path, TRIMTAB_LEARNER__ONLINE__CANARY__HELPFULNESS=str(counted).lower())
    current = thumbs("ver_current", 16, 4) + helpfulness_scores("ver_current", [4] * 10 + [3] * 6 + [0] * 4 + [2] * 6)
    canary = thumbs("ver_canary", 6, 14) + helpfulness_scores("ver_canary", [3] * 6 + [1] * 8 + [0] * 6 + [2] * 6)
    assert judged(config, current + canary) == (("ver_current", None) if counted else ("ver_current", "ver_canary"))


def adapter_version(registry: Registry, base: str, tmp_path: Path, name: str) -> str:
    """A LoRA-kind version (the judge reads only the kind): an adapter's two files on `base`."""
    source = tmp_path / name
    source.mkdir()
    (source / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA"}))
    (source / "adapter_model.safetensors").write_bytes(b"stand-in: never loaded here")
    return registry.publish(source, parent=base, base=base, algorithm="online").id


@pytest.mark.integration
def test_a_passing_candidate_waits_for_the_canary_being_judged_which_is_compared_over_its_own_period(
    stack: TrimtabConfig, tmp_path: Path
) -> None:
    from learner.online.canary import CanaryJudge
    from trimtab.registry.commands import with_pointers

    config = judge_config(stack, tmp_path)
    registry = Registry(config.registry.root)
    base = registry.import_once(make_tiny_model(tmp_path / "base")).id
    first, second, third = (adapter_version(registry, base, tmp_path, n) for n in ("first", "second", "third"))
    with_pointers(config, lambda p: p.promote("ver_current"))
    judge = CanaryJudge(config)
    for event in thumbs("ver_current", 40, 0):  # before any canary: not part of the comparison
        judge.observe(event)

    judge.candidate(first, True, [], {})
    judge.candidate(second, True, [], {})  # the first is still being judged: the second waits ...
    judge.candidate(third, True, [], {})  # ... and is superseded by the newer third
    assert with_pointers(config, lambda p: p.read()).canary == first
    for event in thumbs("ver_current", 30, 10) + thumbs(first, 30, 10):
        judge.observe(event)
    judge.decide()  # 30/40 vs current's 30/40 since the canary started: promoted; the newest waiting is next
    after = with_pointers(config, lambda p: p.read())
    assert (after.current, after.canary) == (first, third)


def canary_beside_current(stack: TrimtabConfig, tmp_path: Path) -> TrimtabConfig:
    """A small learner's settings with the canary judge on (10 verdicts a side), ver_canary serving half the
    users beside ver_current."""
    from trimtab.registry.commands import with_pointers

    config = load_config(
        path=None,
        environ=small_learner_env(stack, tmp_path, partitions=1)
        | {"TRIMTAB_LEARNER__ONLINE__CANARY__ENABLED": "true", "TRIMTAB_LEARNER__ONLINE__CANARY__MIN_FEEDBACK": "10"},
    )
    ensure_topics(config.kafka)
    with_pointers(config, lambda p: p.promote("ver_current"))
    with_pointers(config, lambda p: p.set_canary("ver_canary", 0.5))
    return config


def learner_run(config: TrimtabConfig, context: DistContext, tmp_path: Path) -> OnlineRun:
    """The run `trimtab learn --online` would start on the tiny model (its console kept quiet)."""
    import io

    from rich.console import Console

    from learner.online.loop import OnlineRequest, _start

    model = make_tiny_model(tmp_path / "model")
    return _start(config, OnlineRequest(model), Console(file=io.StringIO()), context, LearnerTelemetry())


def send_verdicts(config: TrimtabConfig) -> None:
    """8 up / 2 down on current's answers, 9 / 1 on the canary's, onto the feedback topic: a promotion."""
    from trimtab.events import event_producer, send_event

    producer = event_producer(config.kafka, "test")
    for event in thumbs("ver_current", 8, 2) + thumbs("ver_canary", 9, 1):
        send_event(producer, config.kafka.topics.feedback.name, event.feedback_id, event).get(timeout=10)
    producer.close()


@pytest.mark.integration
def test_between_a_rounds_phases_the_source_reads_the_new_thumbs_and_the_canary_is_decided(
    stack: TrimtabConfig, tmp_path: Path
) -> None:
    """`FeedbackSource.catch_up`, as the learner calls it between a round's phases: the thumbs that arrived
    while the round trained reach the canary judge, which decides then (not when the round ends), and the
    events wait in the memory's pending items for the next round, their positions read."""
    from contextlib import closing

    from learner.online.canary import CanaryJudge
    from learner.online.source import FeedbackSource
    from trimtab.registry.commands import with_pointers

    config = canary_beside_current(stack, tmp_path)
    run = learner_run(config, DistContext(rank=0, world_size=1, device=torch.device("cpu"), owns_group=False), tmp_path)
    memory = LearnerMemory(replay=Replay(10, seed=0))
    judge = CanaryJudge(config)
    with closing(FeedbackSource(run, memory, judge)) as source:
        source.catch_up()  # nothing there yet: no decision
        assert with_pointers(config, lambda p: p.read()).canary == "ver_canary"
        send_verdicts(config)
        deadline = time.monotonic() + 30
        while with_pointers(config, lambda p: p.read()).canary is not None and time.monotonic() < deadline:
            source.catch_up()
            time.sleep(0.2)
    after = with_pointers(config, lambda p: p.read())
    assert (after.current, after.canary) == ("ver_canary", None)  # 9/10 vs 8/10: promoted
    assert len(memory.pending.items) == 20 and sum(memory.positions.values()) == 20


def test_meanwhile_runs_its_work_at_most_once_an_interval() -> None:
    from learner.online.run import Meanwhile

    now = [100.0]
    meanwhile, calls = Meanwhile(every_s=1.0, clock=lambda: now[0]), []
    now[0] = 101.0
    meanwhile()  # no work set yet (ranks other than 0, a run before its source exists): nothing happens
    meanwhile.set(lambda: calls.append(now[0]))
    meanwhile()  # under a second since the last run (the one with no work)
    now[0] = 102.0
    meanwhile()
    now[0] = 102.5
    meanwhile()
    now[0] = 103.1
    meanwhile()
    assert calls == [102.0, 103.1]


@pytest.mark.integration
def test_the_canary_is_decided_during_a_rounds_optimiser_steps(stack: TrimtabConfig, tmp_path: Path) -> None:
    """The learner sets `OnlineRun.meanwhile` to the source's catch-up, which each optimiser step runs: thumbs
    that arrive while the policy trains reach the canary judge, and the canary is decided before training
    ends, with no catch-up between phases."""
    from contextlib import closing

    from learner.distributed import init_distributed, shutdown
    from learner.online.canary import CanaryJudge
    from learner.online.heads import load_heads
    from learner.online.source import FeedbackSource
    from trimtab.registry.commands import with_pointers

    config = canary_beside_current(stack, tmp_path)
    context = init_distributed(config.learner)  # one rank: the optimiser steps' collectives
    run = learner_run(config, context, tmp_path)
    factory = ItemFactory(run.online.mix)
    built = [factory.build(feedback(feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP))) for _ in range(8)]
    items = [item for item in built if isinstance(item, Item)]
    assert len(items) == 8
    policy = load_heads(run).policy
    memory = LearnerMemory(replay=Replay(10, seed=0))
    with closing(FeedbackSource(run, memory, CanaryJudge(config))) as source:
        run.meanwhile.set(source.catch_up)
        run.meanwhile.every_s = 0.0  # the tiny model's steps take milliseconds
        send_verdicts(config)
        assert with_pointers(config, lambda p: p.read()).canary == "ver_canary"
        try:
            policy.train(run, {"kto": items}, items, round_number=1)
        finally:
            shutdown(context)
    after = with_pointers(config, lambda p: p.read())
    assert (after.current, after.canary) == ("ver_canary", None)  # 9/10 vs 8/10: promoted
    assert len(memory.pending.items) == 20
