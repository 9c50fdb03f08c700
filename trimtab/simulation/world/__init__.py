"""The synthetic world: prompts, responses, a gold reward from text, simulated users, an SFT corpus.

Shared by the default model build, the demo, the tests and the benchmarks; deterministic under a
seed; pure Python. Hold one `World` and ask it everything:

    world = World(WorldConfig(seed=7))            # or default_world() for the default config
    prompt = world.sample_prompt(rng, Split.HELDOUT)
    prompt.text, prompt.messages                  # "What is 3 plus 5?", [{"role": "user", ...}]
    world.render(prompt, world.sample_style(rng), rng)
    world.ideal_response(prompt)                  # correct, polite, concise, safe
    score = world.score(prompt_text, response)    # GoldScore; ValueError only for a foreign prompt
    user = world.population().pick(rng)
    user.thumb(score, rng); user.prefer(score_a, score_b, rng); user.rate(score, rng)
    user.attribute_scores(score, rng); user.correction(prompt, world, rng)
    world.sft_corpus(n, seed); world.corpus_text()

Public API:
- `World(config=None)`: `sample_prompt(rng, split)`, `sample_prompts(n, seed, split)`,
  `parse_prompt(text)`, `split_of(prompt)`, `sample_style(rng)`, `render(prompt, style, rng)`,
  `ideal_response(prompt)`, `score(prompt_text, response_text)`, `score_prompt(prompt, text)`,
  `population()`, `sft_corpus(n, seed=None)`, `corpus_text(n_examples=2000, seed=None)`;
  attributes `config`, `knowledge`, `lexicon`, `grammar`, `split`, `judge`.
- `default_world()`: the (cached) World of the default `WorldConfig`.
- Records: `Prompt`, `Slots`, `Template`, `Pii`, `Style`, `GoldScore`, `Attributes`, `SftExample`,
  `SimulatedUser`, `Population`, `KnowledgeBase`.
- Enums: `Family`, `Split`, `Tone`, `PiiKind`, `Preference`.
- Constants: `IDEAL_STYLE`, `POISON_STYLE`, `MAX_REWARD`, `MIN_REWARD`, `BLOCKLIST`.
The gold reward formula is documented in `trimtab.simulation.world.gold`.
"""

from __future__ import annotations

from functools import lru_cache

from trimtab.config.world import WorldConfig
from trimtab.simulation.world.corpus import SftExample
from trimtab.simulation.world.gold import MAX_REWARD, MIN_REWARD, Attributes, GoldScore
from trimtab.simulation.world.knowledge import KnowledgeBase, Pii, PiiKind
from trimtab.simulation.world.phrases import BLOCKLIST
from trimtab.simulation.world.split import Split
from trimtab.simulation.world.styles import IDEAL_STYLE, Style, Tone
from trimtab.simulation.world.tasks import Family, Prompt, Slots, Template
from trimtab.simulation.world.users import POISON_STYLE, Population, Preference, SimulatedUser
from trimtab.simulation.world.world import World


@lru_cache(maxsize=1)
def default_world() -> World:
    """The World of the default config, built once per process."""
    return World(WorldConfig())


__all__ = [
    "BLOCKLIST",
    "IDEAL_STYLE",
    "MAX_REWARD",
    "MIN_REWARD",
    "POISON_STYLE",
    "Attributes",
    "Family",
    "GoldScore",
    "KnowledgeBase",
    "Pii",
    "PiiKind",
    "Population",
    "Preference",
    "Prompt",
    "SftExample",
    "SimulatedUser",
    "Slots",
    "Split",
    "Style",
    "Template",
    "Tone",
    "World",
    "WorldConfig",
    "default_world",
]
