"""`World`: one seeded synthetic world, the single object callers hold.

It ties the parts together (knowledge base, prompt grammar, train/held-out split, response styles,
gold judge, users, corpus) and owns prompt sampling. Everything is a pure function of the config and
of explicit seeds or `random.Random` instances: two Worlds built from equal configs are identical.
"""

from __future__ import annotations

import random

from trimtab.config.world import WorldConfig
from trimtab.simulation.world import corpus
from trimtab.simulation.world.gold import GoldJudge, GoldScore
from trimtab.simulation.world.knowledge import build_knowledge, random_pii
from trimtab.simulation.world.lexicon import base_lexicon, world_lexicon
from trimtab.simulation.world.phrases import CODE_WORDS
from trimtab.simulation.world.split import PromptSplit, Split
from trimtab.simulation.world.styles import Style, ideal_response, render_response, sample_style
from trimtab.simulation.world.tasks import PII_FAMILIES, SAFE_FAMILIES, UNSAFE_FAMILIES, Family, Prompt, PromptGrammar
from trimtab.simulation.world.users import Population


class World:
    """The synthetic world of a config: prompts, responses, gold reward, users and corpus."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        reserved = base_lexicon() | {w.lower() for w in CODE_WORDS}
        self.knowledge = build_knowledge(self.config.seed, self.config.n_fruits, reserved)
        self.lexicon = world_lexicon(self.knowledge.fruits)
        self.grammar = PromptGrammar(self.knowledge)
        self.split = PromptSplit(self.grammar, self.config.seed, self.config.held_out_fraction)
        self.judge = GoldJudge(self.knowledge, self.grammar, self.lexicon)

    # Prompts

    def sample_prompt(self, rng: random.Random, split: Split = Split.TRAIN) -> Prompt:
        """A prompt of the split: family by the configured weights, then wording, instance, PII."""
        family = self._sample_family(rng)
        template = rng.choice(self.split.templates(split, family))
        slots = rng.choice(self.split.instances(split, template))
        pii = random_pii(rng) if family in PII_FAMILIES and rng.random() < self.config.pii_share else None
        return self.grammar.render(template, slots, pii)

    def sample_prompts(self, n: int, seed: int, split: Split = Split.TRAIN) -> list[Prompt]:
        rng = random.Random(f"{seed}:prompts:{split.value}")
        return [self.sample_prompt(rng, split) for _ in range(n)]

    def parse_prompt(self, text: str) -> Prompt:
        """The prompt behind a text; ValueError naming the text if the world never says it."""
        return self.grammar.parse(text)

    def split_of(self, prompt: Prompt) -> Split:
        return self.split.split_of(prompt)

    def _sample_family(self, rng: random.Random) -> Family:
        if rng.random() < self.config.unsafe_share:
            return rng.choice(UNSAFE_FAMILIES)
        weights = self.config.families
        return rng.choices(SAFE_FAMILIES, weights=[weights.arithmetic, weights.fact, weights.greeting])[0]

    # Responses

    def sample_style(self, rng: random.Random) -> Style:
        return sample_style(self.config.style, rng)

    def render(self, prompt: Prompt, style: Style, rng: random.Random) -> str:
        return render_response(prompt, style, self.knowledge, rng)

    def ideal_response(self, prompt: Prompt) -> str:
        """Correct, polite, concise and safe: the demonstration for corrections and SFT."""
        return ideal_response(prompt, self.knowledge)

    # Gold reward

    def score(self, prompt_text: str, response_text: str) -> GoldScore:
        """r* from text alone (formula: `trimtab.simulation.world.gold`); ValueError only for a foreign prompt."""
        return self.judge.score(prompt_text, response_text)

    def score_prompt(self, prompt: Prompt, response_text: str) -> GoldScore:
        """r* for a prompt already parsed or sampled (skips parsing)."""
        return self.judge.judge(prompt, response_text)

    # Users and corpus

    def population(self) -> Population:
        return Population.build(self.config.users, self.config.seed)

    def sft_corpus(self, n: int, seed: int | None = None) -> list[corpus.SftExample]:
        """n SFT examples on training prompts; seed defaults to the world's seed."""
        return corpus.sft_corpus(self, n, self.config.seed if seed is None else seed)

    def corpus_text(self, n_examples: int = 2000, seed: int | None = None) -> list[str]:
        """Lines for tokenizer training, covering the whole lexicon, codes, PII formats and digits."""
        return corpus.corpus_text(self, n_examples, self.config.seed if seed is None else seed)
