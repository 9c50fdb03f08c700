"""`trimtab demo` / `make demo`: the main job on embedded defaults.

Until the closed loop lands this is: bring up the local stack, load the default model in vLLM,
answer held-out prompts of the synthetic world at T=1, and print each answer with its gold reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from trimtab.config import TrimtabConfig
from trimtab.engine import offline_llm
from trimtab.errors import TrimtabError
from trimtab.stack import up
from trimtab.world import GoldScore, Split, World

Report = Callable[[str], None]
FLAGS = ("correct", "polite", "rude", "rambling", "leak", "toxic")


def run_demo(config: TrimtabConfig, prompts: int, report: Report) -> int:
    if not (config.model.path / "config.json").is_file():
        raise TrimtabError(f"no model at {config.model.path}: run `trimtab model build` (make demo does)")
    report("[1/3] local stack")
    up(config, report=lambda line: report(f"  {line}"))

    report(f"[2/3] loading {config.model.path} in vLLM")
    from vllm import SamplingParams

    llm = offline_llm(config.model.path, config.engine)
    world = World(config.world)
    sample = world.sample_prompts(prompts, seed=config.world.seed, split=Split.HELDOUT)

    report(f"[3/3] answering {len(sample)} held-out prompts at temperature 1")
    params = [SamplingParams(temperature=1.0, max_tokens=64, seed=i) for i in range(len(sample))]
    conversations: list[Any] = [p.messages for p in sample]  # vLLM's chat takes OpenAI-style message dicts
    outputs = llm.chat(conversations, params, use_tqdm=False)
    answers = [output.outputs[0].text for output in outputs]
    scores = [world.score_prompt(prompt, answer) for prompt, answer in zip(sample, answers, strict=True)]
    Console().print(_table([p.text for p in sample], answers, scores))
    mean = sum(score.reward for score in scores) / len(scores)
    report(f"mean gold reward {mean:+.2f} (range -9 to +3); the stack stays up: `trimtab down` stops it")
    return 0


def _table(prompts: list[str], answers: list[str], scores: list[GoldScore]) -> Table:
    table = Table(title="default model, held-out prompts, T=1", show_lines=True)
    table.add_column("prompt", max_width=36)
    table.add_column("answer", max_width=60)
    table.add_column("r*", justify="right")
    table.add_column("judged", max_width=24)
    for prompt, answer, score in zip(prompts, answers, scores, strict=True):
        flags = ", ".join(flag for flag in FLAGS if getattr(score, flag)) or "-"
        if not score.well_formed:
            flags += ", malformed"
        table.add_row(prompt, answer, f"{score.reward:+.0f}", flags)
    return table
