"""The gates' judges outside the simulation: the suite's scorer or a reward-model version of the registry,
checked when the learner starts (a missing or wrong version is named), and scoring each side's answers."""

from __future__ import annotations

import pytest

from learner.evaluate import Evaluation, KLEstimate
from learner.online.gate_worker import judged_scores
from learner.online.suite_check import check_suite
from learner.rewards import RewardError, RewardModel
from tests.learner.tiny import make_tiny_model, make_tiny_reward_model
from trimtab.config import RegistryConfig, TrimtabConfig, load_config
from trimtab.registry import Registry
from trimtab.suite import EvaluationSuite, Judge, SuiteError, checked

PROMPTS = [[{"role": "user", "content": "What is 2 plus 3?"}], [{"role": "user", "content": "Hello!"}]]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry with a tiny causal LM (full) and a reward model made from it (a scalar head)."""
    work = tmp_path_factory.mktemp("judges")
    policy = make_tiny_model(work / "policy")
    make_tiny_reward_model(work / "reward", policy)
    registry = Registry(work / "registry")
    registry.publish(policy, parent=None, algorithm="import")
    registry.publish(work / "reward", parent=None, algorithm="rm")
    return registry


def config_on(registry: Registry) -> TrimtabConfig:
    return TrimtabConfig(registry=RegistryConfig(root=registry.root))


def by_algorithm(registry: Registry, algorithm: str) -> str:
    return next(m.id for m in registry.versions() if m.algorithm == algorithm)


def test_the_learner_refuses_a_judge_version_that_is_missing_or_not_a_reward_model(registry: Registry) -> None:
    config = config_on(registry)
    heldout = tuple(PROMPTS)
    with pytest.raises(RewardError, match=r"suite\.judge_reward_version ver_nope: unknown version"):
        check_suite(config, EvaluationSuite("files", heldout, judge=Judge("rm", reward_version="ver_nope")))
    policy = by_algorithm(registry, "import")
    with pytest.raises(RewardError, match=f"{policy}: a full version, not a reward model"):
        check_suite(config, EvaluationSuite("files", heldout, judge=Judge("rm", reward_version=policy)))
    check_suite(
        config, EvaluationSuite("files", heldout, judge=Judge("rm", reward_version=by_algorithm(registry, "rm")))
    )


def test_the_learner_refuses_gates_without_held_out_prompts_but_not_without_gates(registry: Registry) -> None:
    with pytest.raises(SuiteError, match="needs held-out prompts: the files suite has none"):
        check_suite(config_on(registry), EvaluationSuite("files"))
    ungated = load_config(environ={"TRIMTAB_LEARNER__ONLINE__GATES__ENABLED": "false"})
    check_suite(ungated, EvaluationSuite("files"))


def test_each_judge_scores_the_candidates_the_currents_and_the_references_answers(registry: Registry) -> None:
    sides = Evaluation(("5", "Hi there"), ("6", "Hello!"), KLEstimate(0.0, 0.0, 2))
    current = Evaluation(("five", "Hey"), ("6", "Hello!"), KLEstimate(0.0, 0.0, 2))
    length = Judge("length", scorer=checked(lambda prompt, response: float(len(response)), "length"))
    assert judged_scores(config_on(registry), length, PROMPTS, sides, current) == ([1.0, 8.0], [4.0, 3.0], [1.0, 6.0])
    version = by_algorithm(registry, "rm")
    ours, theirs, reference = judged_scores(
        config_on(registry), Judge("rm", reward_version=version), PROMPTS, sides, current
    )
    model = RewardModel(registry.path(version))
    assert ours == pytest.approx(model(PROMPTS, ["5", "Hi there"]))
    assert theirs == pytest.approx(model(PROMPTS, ["five", "Hey"]))
    assert reference == pytest.approx(model(PROMPTS, ["6", "Hello!"]))
    assert len(set(ours + theirs)) > 1  # a real head: different answers, different scores
    assert judged_scores(config_on(registry), None, PROMPTS, sides, current) is None
