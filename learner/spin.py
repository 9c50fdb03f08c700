"""SPIN, self-play fine-tuning (Chen et al. 2024, arXiv:2401.01335).

Iteration t: the current model pi_t answers every prompt of the SFT data (through vLLM, greedy by
default); each data response y becomes the chosen side and pi_t's own answer y' the rejected side of
a pair, and pi_{t+1} is trained from pi_t with

    L_SPIN = E[ l( lambda log pi(y|x)/pi_t(y|x) - lambda log pi(y'|x)/pi_t(y'|x)) ],  l(u) = log(1 + e^-u)

which is DPO's loss with beta = lambda and the previous iterate as the reference: the reference pass at
the start of each phase scores pi_t, since the model object carries over from one iteration to the next.
Each iteration gets a fresh optimiser and schedule. Pairs whose generation equals the data response
are kept: their loss is log 2 with zero gradient, as in the paper.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist
from torch import nn
from transformers import PreTrainedTokenizerBase

from learner.data import Record, TrainExample, tokenize_records
from learner.distributed import full_state_dict
from learner.generation import generate
from learner.models import export
from learner.objectives import OBJECTIVES
from learner.phase import PhaseResult, PhaseSetup, train_phase
from trimtab.config import TrimtabConfig


def run_spin(
    config: TrimtabConfig,
    setup: PhaseSetup,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    model_dir: Path,
    steps: int | None,
) -> PhaseResult:
    """`learner.spin.iterations` phases on `model` (trained in place); steps are per iteration."""
    spin = config.learner.spin
    objective = OBJECTIVES["spin"](config.learner.loss)
    total, result = 0, PhaseResult(0, {})
    for iteration in range(1, spin.iterations + 1):
        own = self_generations(config, setup, model, tokenizer, records, model_dir, seed=iteration)
        identical = sum(answer == record.responses[0] for answer, record in zip(own, records, strict=True))
        if setup.context.is_main:
            setup.console.print(f"SPIN iteration {iteration}: {identical}/{len(records)} generations equal the data")
        examples = spin_examples(records, own, tokenizer, config.learner.train.max_length)
        extra = {"iteration": float(iteration), "identical_share": identical / len(records)}
        result = train_phase(setup, model, examples, objective, f"SPIN {iteration}/{spin.iterations}", steps, extra)
        total += result.steps
    return PhaseResult(total, result.metrics)


def self_generations(
    config: TrimtabConfig,
    setup: PhaseSetup,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    model_dir: Path,
    seed: int,
) -> list[str]:
    """The current model's answer to every record's prompt: rank 0 writes the iterate and asks vLLM,
    then every rank receives the answers."""
    state = full_state_dict(model)  # every rank takes part in the gather
    answers: list[list[str]] = [[]]
    if setup.context.is_main:
        lora = config.learner.lora
        with tempfile.TemporaryDirectory(prefix="trimtab-spin-") as scratch:
            iterate = Path(scratch)
            export(state, model.config, iterate, reward_model=False, lora=lora)
            tokenizer.save_pretrained(iterate)
            answers[0] = generate(
                model_dir if lora.enabled else iterate,
                [record.prompt for record in records],
                config.engine,
                max_tokens=config.learner.spin.max_tokens,
                temperature=config.learner.spin.temperature,
                seed=seed,
                adapter_dir=iterate if lora.enabled else None,
            )
    dist.broadcast_object_list(answers, src=0)
    return answers[0]


def spin_examples(
    records: Sequence[Record], own: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[TrainExample]:
    """(chosen = the data's response, rejected = the model's own answer) for each record."""
    pairs = [
        Record(record.prompt, (record.responses[0], answer), record.desirable, record.where)
        for record, answer in zip(records, own, strict=True)
    ]
    return tokenize_records(pairs, tokenizer, "spin", max_length)
