"""Default-model generation throughput: vLLM (the serving engine) vs Hugging Face `generate`.

Same model, same held-out prompts, greedy, exactly `max_tokens` new tokens per prompt (end-of-turn
ignored) so both do the same work. Each side runs `repeats` times after a warm-up; the median counts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.report import Comparison
from trimtab.config import TrimtabConfig
from trimtab.engine import offline_llm
from trimtab.simulation.world import Split, World


def bench_generation(config: TrimtabConfig, prompts: int = 32, max_tokens: int = 64, repeats: int = 3) -> Comparison:
    world = World(config.world)
    conversations: list[Any] = [p.messages for p in world.sample_prompts(prompts, seed=7, split=Split.HELDOUT)]
    tokens = prompts * max_tokens

    vllm_rates = _vllm_rates(config, conversations, max_tokens, repeats)
    tokenizer = AutoTokenizer.from_pretrained(config.model.path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def hf_generate() -> None:
        with torch.no_grad():
            model.generate(**batch, do_sample=False, max_new_tokens=max_tokens, min_new_tokens=max_tokens)

    hf_rates = _rates(hf_generate, tokens, repeats)
    return Comparison(
        name=f"default-model generation, {prompts} prompts x {max_tokens} tokens, greedy",
        unit="tokens/s",
        candidate="vLLM",
        candidate_value=statistics.median(vllm_rates),
        baseline="HF generate",
        baseline_value=statistics.median(hf_rates),
        notes=f"median of {repeats} after a warm-up; runs vLLM {_span(vllm_rates)}, HF {_span(hf_rates)}",
    )


def _vllm_rates(config: TrimtabConfig, conversations: list[Any], max_tokens: int, repeats: int) -> list[float]:
    from vllm import SamplingParams

    llm = offline_llm(config.model.path, config.engine)  # shut down when this function returns
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    return _rates(lambda: llm.chat(conversations, params, use_tqdm=False), len(conversations) * max_tokens, repeats)


def _rates(run: Callable[[], object], tokens: int, repeats: int) -> list[float]:
    run()  # warm-up: the first request after start-up is slow (design.md)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(tokens / (time.perf_counter() - started))
    return rates


def _span(rates: list[float]) -> str:
    return f"{min(rates):,.0f}-{max(rates):,.0f}"
