"""The demo report's data shaping (worked numbers), its files from synthetic records, the users' labels
and the demo config: no services."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from trimtab.app.demo import analysis
from trimtab.app.demo.quality import QualityCheck, latest_promoted
from trimtab.app.demo.records import Answer, Interaction, PointerChange, SwapEvent, read_jsonl
from trimtab.app.demo.report import PLOTS, RunRecords, write_report
from trimtab.app.demo.run import isolated
from trimtab.app.demo.users import judge
from trimtab.config import TrimtabConfig, load_config
from trimtab.config.demo import DemoConfig, FeedbackMix
from trimtab.simulation.world import Split, World, default_world
from trimtab.v1 import feedback_pb2

V0, V1 = "ver_00000000000000000000000000", "ver_11111111111111111111111111"
PNG = b"\x89PNG\r\n\x1a\n"


def answer(version: str, reward: float) -> Answer:
    return Answer(f"resp_{version[-1]}{reward}", version, (version,), reward, well_formed=True, unsafe=False)


def served(at_s: float, kind: str, *answers: Answer, up: bool | None = None, latency: float = 0.5) -> Interaction:
    return Interaction(0, at_s, kind, "user-001", False, latency, answers, up, accepted=True, submit_latency_s=0.01)


def failed(at_s: float) -> Interaction:
    return Interaction(0, at_s, "thumb", "user-002", False, error="Generate UNAVAILABLE: connection refused")


@pytest.fixture
def interactions() -> list[Interaction]:
    return [
        served(1.0, "pairwise", answer(V0, -1.0), answer(V0, 1.0)),
        served(5.0, "thumb", answer(V0, 2.0), up=True, latency=0.1),
        failed(12.0),
        served(14.0, "thumb", answer(V1, 3.0), up=False, latency=0.3),
        served(25.0, "rating", answer(V1, 1.0), latency=0.9),
    ]


def test_rewards_and_thumbs_are_points_per_answer_in_time_order(interactions: list[Interaction]) -> None:
    assert analysis.answer_rewards(interactions) == [
        (1.0, V0, -1.0),
        (1.0, V0, 1.0),
        (5.0, V0, 2.0),
        (14.0, V1, 3.0),
        (25.0, V1, 1.0),
    ]
    assert analysis.thumbs(interactions) == [(5.0, V0, 1.0), (14.0, V1, 0.0)]


def test_bins_average_each_version_separately(interactions: list[Interaction]) -> None:
    bins = analysis.binned_by_version(analysis.answer_rewards(interactions), bin_s=10.0)
    assert bins == {
        V0: [analysis.Bin(5.0, 2.0 / 3, 3)],  # (-1 + 1 + 2) / 3 in [0, 10)
        V1: [analysis.Bin(15.0, 3.0, 1), analysis.Bin(25.0, 1.0, 1)],
    }
    with pytest.raises(ValueError, match="bin_s"):
        analysis.binned_by_version([], 0)


def test_version_stats_carry_live_numbers_and_manifest_kl(interactions: list[Interaction]) -> None:
    v0, v1 = analysis.version_stats(interactions, {V1: 2.5})
    assert (v0.version, v0.answers, v0.mean_reward, v0.thumbs, v0.thumbs_up_rate, v0.kl) == (V0, 3, 2 / 3, 1, 1.0, None)
    assert (v1.first_s, v1.last_s, v1.mean_reward, v1.thumbs_up_rate, v1.kl) == (14.0, 25.0, 2.0, 0.0, 2.5)


def test_failures_are_counted_in_every_bin_of_the_run(interactions: list[Interaction]) -> None:
    bins = analysis.failures_by_bin(interactions, bin_s=10.0, duration_s=40.0)
    assert [(b.start_s, b.requests, b.failed) for b in bins] == [(0, 2, 0), (10, 2, 1), (20, 1, 0), (30, 0, 0)]


def test_percentile_interpolates() -> None:
    assert analysis.percentile([], 50) is None
    assert analysis.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert analysis.percentile([1.0, 2.0], 95) == pytest.approx(1.95)


def test_summary(interactions: list[Interaction]) -> None:
    swaps = [SwapEvent(13.0, V0, V1, 95.0, True, "", "keep"), SwapEvent(20.0, V1, "ver_x", 0.0, False, "bad", "keep")]
    s = analysis.summarize(interactions, swaps, duration_s=30.0, window=2)
    assert (s.interactions, s.failed, s.interactions_per_s) == (5, 1, pytest.approx(5 / 30))
    assert s.accepted == {"pairwise": 1, "rating": 1, "thumb": 2}
    assert s.errors == {"Generate UNAVAILABLE": 1}
    assert (s.answers, s.mean_reward_first, s.mean_reward_last) == (5, 0.0, 2.0)
    assert (s.latency_p50_s, s.latency_max_s, s.thumbs_up_rate) == (0.4, 0.9, 0.5)
    assert (s.versions_served, s.swaps, s.failed_swaps, s.max_stall_ms) == (2, 1, 1, 95.0)


def test_latest_promoted_is_the_final_current_version_unless_it_is_the_initial_one() -> None:
    changes = [PointerChange(0, V0, None, 0), PointerChange(9, V0, V1, 0.5), PointerChange(20, V1, None, 0)]
    assert latest_promoted(changes, V0) == V1
    assert latest_promoted(changes[:2], V0) is None
    assert latest_promoted([], None) is None


def test_report_writes_plots_html_and_records(tmp_path: Path, interactions: list[Interaction]) -> None:
    records = RunRecords(
        interactions=interactions,
        changes=[PointerChange(0, V0, None, 0), PointerChange(13, V1, None, 0)],
        swaps=[SwapEvent(13.0, V0, V1, 95.0, True, "", "keep")],
        kl={V0: 0.0, V1: 1.5},
        duration_s=30.0,
        logs={"serve": tmp_path / "serve.log"},
        quality=QualityCheck(V1, "default", 64, 0.8, 1.2, -0.6, 1.4, unsafe_requests=10, unsafe_answers=3),
        notes=["a note"],
    )
    report = write_report(tmp_path, records, bin_s=10.0, window=2)
    assert set(report.plots) == set(PLOTS)
    for path in report.plots.values():
        assert path.read_bytes().startswith(PNG) and path.parent == tmp_path / "plots"
    page = report.html.read_text()
    assert all(f"plots/{path.name}" in page for path in report.plots.values())
    assert "a note" in page and "wins 80.0%" in page and V1 in page
    assert "3 of 10 held-out unsafe requests (default model 0)" in page
    rows = [Interaction.from_json(row) for row in read_jsonl(tmp_path / "interactions.jsonl")]
    assert rows == interactions


def test_an_empty_run_still_reports(tmp_path: Path) -> None:
    report = write_report(tmp_path, RunRecords([], [], [], {}, duration_s=5.0), bin_s=10.0, window=10)
    assert report.summary.interactions == 0 and all(p.is_file() for p in report.plots.values())


@pytest.mark.parametrize("kind", ["pairwise", "thumb", "rating", "attributes", "correction"])
def test_users_judge_each_kind_on_the_answers_they_were_served(kind: str) -> None:
    world = default_world()
    rng = random.Random(3)
    prompt = world.sample_prompt(rng, Split.TRAIN)
    good, bad = world.ideal_response(prompt), "no idea, go away, idiot"
    scores = [world.score_prompt(prompt, good), world.score_prompt(prompt, bad)]
    honest = world.population().honest[0]
    judgement = judge(kind, honest, prompt, ["resp_good", "resp_bad"], scores, world, rng)  # type: ignore[arg-type]
    label = judgement.label
    assert label.WhichOneof("kind") == kind
    assert judgement.response_id == ("" if kind == "pairwise" else "resp_good")
    assert (judgement.thumbs_up is not None) == (kind == "thumb")
    if kind == "pairwise":
        assert {label.pairwise.chosen_response_id, label.pairwise.rejected_response_id} == {"resp_good", "resp_bad"}
    if kind == "attributes":
        assert 0 <= label.attributes.helpfulness <= 4


def test_noise_free_users_prefer_the_better_answer() -> None:
    world = World(
        default_world().config.model_copy(
            update={"users": default_world().config.users.model_copy(update={"noise": 0.0, "noise_spread": 0.0})}
        )
    )
    rng = random.Random(0)
    prompt = world.sample_prompt(rng, Split.TRAIN)
    scores = [world.score_prompt(prompt, world.ideal_response(prompt)), world.score_prompt(prompt, "")]
    user = world.population().honest[0]
    chosen = [
        judge("pairwise", user, prompt, ["a", "b"], scores, world, rng).label.pairwise.chosen_response_id
        for _ in range(50)
    ]
    assert chosen.count("a") >= 45  # Bradley-Terry on a reward gap of >= 4 at T=1: P(a) > 0.98
    assert judge("thumb", user, prompt, ["a"], scores, world, rng).label.thumb in (
        feedback_pb2.THUMB_UP,
        feedback_pb2.THUMB_DOWN,
    )


def test_demo_config_rejects_no_feedback_and_external_serving_when_isolated() -> None:
    with pytest.raises(ValueError, match="at least one feedback kind"):
        FeedbackMix(pairwise=0, thumb=0, rating=0, attributes=0, correction=0)
    with pytest.raises(ValueError, match="isolate_run"):
        DemoConfig(serving_address="127.0.0.1:1")
    config = load_config(environ={"TRIMTAB_DEMO__USERS__RATE": "7", "TRIMTAB_DEMO__LEARNER": "false"})
    assert (config.demo.users.rate, config.demo.learner) == (7, False)


def test_an_isolated_run_shares_no_prefix_registry_topic_or_checkpoint(tmp_path: Path) -> None:
    config = TrimtabConfig()
    run = isolated(config, tmp_path / "20261123-120000-abcd")
    assert run.redis.key_prefix == "trimtab:demo-20261123-120000-abcd:"
    assert run.registry.root == tmp_path / "20261123-120000-abcd" / "registry"
    assert run.kafka.topics.feedback.name == "trimtab.feedback.demo-20261123-120000-abcd"
    assert run.kafka.topics.versions.partitions == config.kafka.topics.versions.partitions
    assert run.learner.online.checkpoint_dir == tmp_path / "20261123-120000-abcd" / "learner"
    assert TrimtabConfig.model_validate(run.model_dump(mode="json")) == run  # what the children load
