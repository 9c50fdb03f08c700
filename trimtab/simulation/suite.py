"""The world's evaluation suite (`suite.kind: world`, registered as the `trimtab.suites` entry point
`world`): what the demo, the tests and the benches gate and guard with.

- held-out prompts: the world's held-out split (wordings x instances never trained on);
- anchors: the world's ideal answers (correct, polite, concise, safe) to training prompts;
- red team: held-out requests for the planted secret and for insults, `world.red_team_per_family` each;
- protected terms: the vault code (its digits alone are found too) and the insult blocklist;
- judge: the gold reward r* (`trimtab.simulation.world.gold`), unless `suite.judge` or
  `suite.judge_reward_version` names another.

Every list is a prefix-stable draw: the first n of a longer suite are the n of a shorter one.
"""

from __future__ import annotations

import functools
import random

from trimtab.config import TrimtabConfig
from trimtab.jsonl import Messages, last_user_turn
from trimtab.simulation.world import BLOCKLIST, Family, Split, World, default_world
from trimtab.suite import Demonstration, EvaluationSuite, Judge, ProtectedTerms, RedTeamPrompt, Scorer, checked
from trimtab.suite.files import configured_judge

HELDOUT_PROMPTS = 256  # consumers take a prefix (learner.online.gates.heldout_prompts)
ANCHOR_EXAMPLES = 256  # likewise (learner.online.round.anchor_examples)
RED_TEAM_FAMILIES = (Family.SECRET, Family.INSULT)
MAX_DRAWS = 100_000  # unsafe prompts are a share of the world's draws; enough for any sensible count


def world_suite(config: TrimtabConfig) -> EvaluationSuite:
    world = World(config.world)
    seed = config.world.seed
    anchors = world.sample_prompts(ANCHOR_EXAMPLES, seed=seed + 1)
    gold = Judge("the world's gold reward", scorer=checked(gold_scorer(world), "world gold reward"))
    return EvaluationSuite(
        name="world",
        heldout=tuple(p.messages for p in world.sample_prompts(HELDOUT_PROMPTS, seed=seed, split=Split.HELDOUT)),
        anchors=tuple(Demonstration(p.messages, world.ideal_response(p)) for p in anchors),
        red_team=tuple(red_team(world, config.world.red_team_per_family, seed)),
        protected=ProtectedTerms(secrets=(world.knowledge.secret,), blocklist=BLOCKLIST),
        # A judge configured for the suite (a scorer, a reward version) replaces the gold reward.
        judge=configured_judge(config.suite) or gold,
    )


def red_team(world: World, per_family: int, seed: int) -> list[RedTeamPrompt]:
    """`per_family` held-out requests of each unsafe family, in draw order."""
    rng = random.Random(f"{seed}:red-team")
    wanted = dict.fromkeys(RED_TEAM_FAMILIES, per_family)
    prompts: list[RedTeamPrompt] = []
    for _ in range(MAX_DRAWS):
        if not any(wanted.values()):
            break
        prompt = world.sample_prompt(rng, Split.HELDOUT)
        if wanted.get(prompt.family, 0) > 0:
            wanted[prompt.family] -= 1
            prompts.append(RedTeamPrompt(prompt.messages, prompt.family.value))
    return prompts


def gold_scorer(world: World) -> Scorer:
    """r* of a response to a prompt of the world (a foreign prompt is the scorer's error)."""

    def score(prompt: Messages, response: str) -> float:
        return world.score(last_user_turn(prompt), response).reward

    return score


def gold_reward(prompt: Messages, response: str) -> float:
    """The default world's r* as a scorer entry point (`--reward trimtab.simulation.suite:gold_reward`)."""
    return _default_scorer()(prompt, response)


@functools.lru_cache(maxsize=1)
def _default_scorer() -> Scorer:
    return gold_scorer(default_world())
