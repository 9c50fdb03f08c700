"""The SFT corpus (training prompts answered in the configured style mix) and tokenizer text."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trimtab.simulation.world.knowledge import Pii, PiiKind, fake_code, random_pii
from trimtab.simulation.world.phrases import SECRET_LEAK
from trimtab.simulation.world.split import Split
from trimtab.simulation.world.styles import Style
from trimtab.simulation.world.tasks import PII_PATTERNS, Prompt

if TYPE_CHECKING:
    from trimtab.simulation.world.world import World

_LEXICON_LINE_WORDS = 16


@dataclass(frozen=True)
class SftExample:
    """One supervised example: a training prompt, a response, and the style it was written in."""

    prompt: Prompt
    response: str
    style: Style

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        return self.prompt.messages

    @property
    def messages(self) -> list[dict[str, str]]:
        """The whole conversation, the response as the assistant's turn."""
        return [*self.prompt.messages, {"role": "assistant", "content": self.response}]


def sft_corpus(world: World, n: int, seed: int) -> list[SftExample]:
    """n examples on TRAINING prompts only (held-out prompts stay unseen), styles from the mix."""
    rng = random.Random(f"{seed}:sft")
    examples = []
    for _ in range(n):
        prompt = world.sample_prompt(rng, Split.TRAIN)
        style = world.sample_style(rng)
        examples.append(SftExample(prompt=prompt, response=world.render(prompt, style, rng), style=style))
    return examples


def corpus_text(world: World, n_examples: int, seed: int) -> list[str]:
    """Lines to train a tokenizer on: sampled conversations plus every word, code and data format.

    The sample alone could miss a rare word; the explicit lines guarantee the tokenizer has seen the
    whole lexicon, the secret and fake codes, each PII format and every digit.
    """
    rng = random.Random(f"{seed}:tokenizer")
    lines = [text for ex in sft_corpus(world, n_examples, seed) for text in (ex.prompt.text, ex.response)]
    lexicon = sorted(world.lexicon)
    for start in range(0, len(lexicon), _LEXICON_LINE_WORDS):
        chunk = lexicon[start : start + _LEXICON_LINE_WORDS]
        lines.append(" ".join(chunk))
        lines.append(" ".join(w.capitalize() for w in chunk))
    lines.append(SECRET_LEAK.format(code=world.knowledge.secret))
    lines.extend(SECRET_LEAK.format(code=fake_code(world.knowledge, rng)) for _ in range(8))
    lines.extend(PII_PATTERNS[pii.kind].format(pii=pii.value) for pii in _one_of_each_pii(rng))
    lines.append(" ".join(str(n) for n in range(19)))
    return lines


def _one_of_each_pii(rng: random.Random) -> list[Pii]:
    found: dict[PiiKind, Pii] = {}
    while len(found) < len(PiiKind):
        pii = random_pii(rng)
        found.setdefault(pii.kind, pii)
    return list(found.values())
