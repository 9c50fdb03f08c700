"""Offline alignment data from simulated users judging a model's own answers.

For each training-split prompt of the synthetic world the model answers twice (vLLM, T=1, its own
distribution), and users drawn from the world's `Population` judge the answers by the gold reward
(`trimtab.simulation.world.users`: Bradley-Terry preferences and thumbs with label noise, adversaries if the
world config has any):

- one user compares the two answers -> a DPO/IPO row {"prompt", "chosen", "rejected"}; ties (equal
  gold reward, or the same text) give no row, as a user who sees no difference gives no preference;
- one user thumbs the first answer up or down -> a KTO row {"prompt", "completion", "label"}.

So each prompt costs one judgement for either kind of data: the algorithms compare at equal feedback.

    data = simulate_feedback(llm, world, n_prompts=800, seed=0)
    files = data.write(out_dir)            # out_dir/pairs.jsonl (dpo, ipo) and thumbs.jsonl (kto)
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trimtab.simulation.world import Population, Preference, Prompt, Split, World

if TYPE_CHECKING:
    from vllm import LLM

MAX_TOKENS = 64  # the world's answers are 3-40 words; a longer sample is cut (and judged as it is)
Row = dict[str, Any]


@dataclass(frozen=True)
class AnswerPair:
    prompt: Prompt
    first: str
    second: str


@dataclass
class FeedbackData:
    """Rows in the learner's seed JSONL formats (`learner.data`), and what was left out."""

    pairs: list[Row] = field(default_factory=list)  # DPO / IPO
    thumbs: list[Row] = field(default_factory=list)  # KTO
    ties: int = 0  # comparisons that gave no preference
    empty: int = 0  # empty answers (the seed formats need text), judged by nobody

    def write(self, out_dir: Path) -> dict[str, Path]:
        """pairs.jsonl and thumbs.jsonl in `out_dir`; the paths by the algorithms that read them."""
        out_dir.mkdir(parents=True, exist_ok=True)
        pairs, thumbs = (
            write_jsonl(out_dir / "pairs.jsonl", self.pairs),
            write_jsonl(out_dir / "thumbs.jsonl", self.thumbs),
        )
        return {"dpo": pairs, "ipo": pairs, "kto": thumbs}


def sample_answer_pairs(
    llm: LLM, prompts: Sequence[Prompt], seed: int, max_tokens: int = MAX_TOKENS
) -> list[AnswerPair]:
    """Two answers per prompt from the engine's model at T=1 (no top-k / top-p), reproducible by seed."""
    from vllm import SamplingParams

    conversations: list[Any] = [prompt.messages for prompt in prompts]  # vLLM takes OpenAI-style dicts
    # With n=2 vLLM seeds the two answers `seed` and `seed + 1`: step by 2 so no two answers share a seed.
    params = [
        SamplingParams(n=2, temperature=1.0, max_tokens=max_tokens, seed=seed + 2 * i) for i in range(len(prompts))
    ]
    outputs = llm.chat(conversations, params, use_tqdm=False)
    return [
        AnswerPair(prompt, out.outputs[0].text, out.outputs[1].text)
        for prompt, out in zip(prompts, outputs, strict=True)
    ]


def judge_answers(world: World, population: Population, answers: Sequence[AnswerPair], seed: int) -> FeedbackData:
    """Each pair compared by one user and its first non-empty answer thumbed by another, drawn uniformly."""
    rng = random.Random(f"{seed}:simulated-feedback")
    data = FeedbackData()
    for pair in answers:
        texts = [text for text in (pair.first, pair.second) if text.strip()]
        data.empty += 2 - len(texts)
        scores = [world.score_prompt(pair.prompt, text) for text in texts]
        if texts:
            thumb = population.pick(rng).thumb(scores[0], rng)
            data.thumbs.append({"prompt": pair.prompt.text, "completion": texts[0], "label": thumb})
        if len(texts) < 2 or texts[0] == texts[1]:
            data.ties += len(texts) == 2
            continue
        preference = population.pick(rng).prefer(scores[0], scores[1], rng)
        if preference is Preference.TIE:
            data.ties += 1
            continue
        chosen, rejected = texts if preference is Preference.A else texts[::-1]
        data.pairs.append({"prompt": pair.prompt.text, "chosen": chosen, "rejected": rejected})
    return data


def simulate_feedback(llm: LLM, world: World, n_prompts: int, seed: int) -> FeedbackData:
    """Feedback from the world's population on the engine's answers to n training-split prompts."""
    prompts = world.sample_prompts(n_prompts, seed=seed, split=Split.TRAIN)
    return judge_answers(world, world.population(), sample_answer_pairs(llm, prompts, seed), seed)


def write_jsonl(path: Path, rows: Sequence[Row]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
