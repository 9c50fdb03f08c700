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

from collections.abc import Sequence
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from learner.data import Record, TrainExample, tokenize_records
from learner.distributed import from_main
from learner.objectives import OBJECTIVES
from learner.phase import PhaseResult, PhaseSetup, train_phase
from learner.publish import Contents, exported
from learner.rollout import RolloutEngine, Sampling
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
    spin, lora = config.learner.spin, config.learner.lora
    objective = OBJECTIVES["spin"](config.learner.loss)
    total, result = 0, PhaseResult(0, {})
    # One engine for every iteration, refitted with each iterate (an engine start is most of an iteration's
    # generation time on small models); on the base model when the iterates are adapters.
    log = setup.out / "spin-engine.log"
    with RolloutEngine.on_main(setup.context, model_dir, config.engine, adapter=lora.enabled, log=log) as engine:
        for iteration in range(1, spin.iterations + 1):
            sampling = Sampling(
                n=1, temperature=spin.temperature, max_tokens=spin.max_tokens, seed=iteration * len(records)
            )
            own = self_generations(
                setup, model, Contents(tokenizer, lora, reward_model=False), records, engine, sampling
            )
            identical = sum(answer == record.responses[0] for answer, record in zip(own, records, strict=True))
            if setup.context.is_main:
                setup.console.print(
                    f"SPIN iteration {iteration}: {identical}/{len(records)} generations equal the data"
                )
            examples = spin_examples(records, own, tokenizer, config.learner.train.max_length)
            extra = {"iteration": float(iteration), "identical_share": identical / len(records)}
            result = train_phase(setup, model, examples, objective, f"SPIN {iteration}/{spin.iterations}", steps, extra)
            total += result.steps
    return PhaseResult(total, result.metrics)


def self_generations(
    setup: PhaseSetup,
    model: nn.Module,
    contents: Contents,
    records: Sequence[Record],
    engine: RolloutEngine | None,
    sampling: Sampling,
) -> list[str]:
    """The current model's answer to every record's prompt: every rank joins the gather of the iterate,
    rank 0 exports it, refits its engine and asks it; every rank receives the answers."""
    with exported(model, contents, setup.context) as directory:
        return from_main(lambda: _answers(engine, directory, records, sampling), setup.context)


def _answers(
    engine: RolloutEngine | None, directory: Path | None, records: Sequence[Record], sampling: Sampling
) -> list[str]:
    assert engine is not None and directory is not None, "rank 0 holds the engine and writes the export"
    engine.refit(directory)
    return [rollout.text for rollout in engine.generate([record.prompt for record in records], sampling)]


def spin_examples(
    records: Sequence[Record], own: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[TrainExample]:
    """(chosen = the data's response, rejected = the model's own answer) for each record."""
    pairs = [
        Record(record.prompt, (record.responses[0], answer), record.desirable, record.where)
        for record, answer in zip(records, own, strict=True)
    ]
    return tokenize_records(pairs, tokenizer, "spin", max_length)
