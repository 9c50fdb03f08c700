"""A tiny Llama (hidden 64, 2 layers) with a tokenizer trained on the synthetic world, and seed-format
data files, made fresh by the tests that need them (the default model is too slow for invariant tests,
and these tests must not depend on `trimtab model build` having run)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trimtab.simulation.default_model.tokenizer import train_tokenizer
from trimtab.simulation.world import default_world


def make_tiny_model(directory: Path, seed: int = 0) -> Path:
    """An HF model directory: random weights from `seed`, config, tokenizer and chat template."""
    tokenizer = train_tokenizer(default_world().corpus_text(n_examples=300, seed=1), vocab_size=512)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def arithmetic_rows(n: int, algorithm: str) -> list[dict[str, object]]:
    """n examples in `algorithm`'s seed format: the right sum is chosen / desirable, a wrong one rejected."""
    rows: list[dict[str, object]] = []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        prompt: object = f"What is {a} plus {b}?"
        if i % 3 == 0:  # some prompts as chat message lists
            prompt = [{"role": "user", "content": f"What is {a} plus {b}?"}]
        right, wrong = f"It is {a + b}.", f"I think it is {a * b + 3}, maybe."
        if algorithm in ("sft", "spin"):
            rows.append({"prompt": prompt, "response": right})
        elif algorithm == "steerlm":  # the wrong answer labelled as such: attributes describe the response
            good = i % 2 == 0
            scores = {"helpfulness": 4 if good else 1, "correctness": 4 if good else 0}
            rows.append({"prompt": prompt, "response": right if good else wrong, "attributes": scores})
        elif algorithm == "kto":
            rows.append({"prompt": prompt, "completion": right if i % 2 else wrong, "label": bool(i % 2)})
        else:
            rows.append({"prompt": prompt, "chosen": right, "rejected": wrong})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_tiny_reward_model(directory: Path, policy: Path, seed: int = 0) -> Path:
    """A reward model (sequence classifier, one label) on `policy`'s backbone with a seeded head, and its
    tokenizer: what `trimtab learn --algo rm` publishes, untrained."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    reward = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)
    reward.config.pad_token_id = reward.config.eos_token_id
    reward.save_pretrained(directory)
    AutoTokenizer.from_pretrained(policy).save_pretrained(directory)
    return directory
