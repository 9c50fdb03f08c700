"""Sampling answers with HF generate and summarising them with the world's gold judge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trimtab.simulation.world import World

Messages = Sequence[dict[str, str]]


def sample_with_hf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Messages],
    temperature: float,
    seed: int,
    max_new_tokens: int = 64,
    batch_size: int = 64,
) -> list[str]:
    """One answer per conversation (greedy when temperature is 0), decoded without special tokens."""
    model.eval()
    torch.manual_seed(seed)
    answers: list[str] = []
    for start in range(0, len(conversations), batch_size):
        chunk = conversations[start : start + batch_size]
        prompts = [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False) for c in chunk]
        # Left padding: every row's generation then starts at the same position.
        tokenizer.padding_side = "left"
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        output = model.generate(**batch, max_new_tokens=max_new_tokens, **sampling)  # type: ignore[operator]
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return answers


@dataclass(frozen=True)
class StyleStats:
    """Mean gold reward and the share of answers with each judged attribute."""

    mean_reward: float
    correct: float
    polite: float
    rude: float
    rambling: float
    leak: float
    toxic: float
    well_formed: float

    def as_dict(self) -> dict[str, float]:
        return {key: round(value, 4) for key, value in asdict(self).items()}

    def describe(self) -> str:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in self.as_dict().items() if k != "mean_reward")
        return f"mean gold reward {self.mean_reward:+.2f}; {shares}"


def style_stats(world: World, prompt_texts: Sequence[str], responses: Sequence[str]) -> StyleStats:
    scores = [world.score(prompt, response) for prompt, response in zip(prompt_texts, responses, strict=True)]

    def share(flag: str) -> float:
        return sum(bool(getattr(score, flag)) for score in scores) / len(scores)

    return StyleStats(
        mean_reward=sum(score.reward for score in scores) / len(scores),
        **{flag: share(flag) for flag in ("correct", "polite", "rude", "rambling", "leak", "toxic", "well_formed")},
    )
