"""GRPO on the default model: trimtab's RL loop vs TRL's GRPOTrainer, and what a step is made of.

Three rows, all on the default model (config.model.path) and the world's training prompts, scored by the
world's gold reward (`trimtab.simulation.suite:gold_reward`):

1. GRPO seconds per step. trimtab: `learner.rl.step.rl_step` in this process (the recipe `run_rl` runs,
   without its publishing at the end): vLLM rollouts in the long-lived rollout engine, score, measure
   (actor and reference log-probs), one update, refit of the engine in place. TRL 1.16 `GRPOTrainer`
   with `use_vllm=False`: its colocated vLLM fails on vLLM's CPU backend (design.md), so it samples with
   HF `generate` and needs no weight sync. Equalised: model, float32 on CPU, torch threads; the very
   same prompts in the same order (TRL: unshuffled, in trimtab's draw order); group size
   (num_generations); learner.rl.rollout.prompts_per_step prompts per step, in micro-batches of
   learner.train.micro_batch_size (TRL: per_device_train_batch_size = micro-batch, gradient accumulation
   = steps_per_generation = answers / micro-batch, so one generation feeds exactly one optimiser step:
   num_iterations=1); max completion tokens, temperature 1.0 (no top-k/top-p); the GRPO loss
   (token-level clipped ratio, epsilon = learner.rl.clip_ratio; the k3 KL to the reference in the loss
   with beta = learner.rl.kl.coef and no importance weighting of it, use_bias_correction_kl=False;
   sequence_mean aggregation = loss_type "grpo"; group std scaling = scale_rewards "group"); AdamW as
   `learner.rl.roles.constant_optimizer` builds it (learner.optim.lr constant, OptimConfig's default
   decay and betas, fused, clip at learner.optim.grad_clip); no gradient checkpointing; the reward.
2. Rollout tokens/s: the RolloutEngine (vLLM, in its child process) vs HF `generate` in this process,
   sampling one step's prompts x group size at the rollout temperature and max tokens; generated tokens
   counted up to and including end-of-turn on both sides (HF keeps computing a finished row until the
   batch's longest is done: that work is its cost, not counted as tokens).
3. Seconds to serve new weights after an update: trimtab's refit (export + reload_weights in the running
   engine, `refit_s` of the timed steps) vs what a trainer without in-place refit pays: the same export,
   then a fresh vLLM engine (`trimtab.engine.offline_llm`, the rollout engine's settings) until its first
   generated token.

Timing: each side runs WARMUP steps, then TIMED steps; the wall time from the end of the last warm-up
step to the end of the last step counts. Both start from the base model each round, trimtab and TRL
alternating ROUNDS times (the machine is shared), each side's best round counting. One-off start-up
costs are outside the step time and reported in the notes: trimtab's rollout-engine start (to its first
answer), TRL's trainer construction (policy and reference loads). The rollout probe (vLLM and HF generate
taking turns, in the first trimtab run before its steps, the engine idle in between) and the engine
restarts (after that run, its process group gone) run once. Step counts, chosen to keep the bench near 4
minutes on 2 shared cores (under the ~6 minutes allowed, with room for a slow spell): a step of either
side is 1.1-1.7 s here (completions end after ~15-20 tokens), a trimtab round adds ~15 s of engine
start, a restart ~10-12 s; WARMUP 2 (the first vLLM request after start-up is slow) and TIMED 12 steps a
round (14 x 8 distinct prompts, 32 answers a step), ROUNDS 3, RESTARTS 3, ROLLOUT_REPEATS 8 (one step's
batch generates in ~0.4 s: too short to time once).

Not equalised (said in the notes): the samples (vLLM's and HF's samplers draw differently, so the
completions and their lengths differ: the mean completion length of each side is reported); trimtab
measures the actor's log-probs before the update (the PPO ratio's denominator and the engine drift
check), where TRL, on-policy with HF generate, reuses the detached training forward; TRL's training
forward keeps only the completion logits (logits_to_keep) and also computes entropies.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback

from bench.report import Comparison, write_report
from bench.simulation import simulation_config
from learner.distributed import init_distributed, shutdown
from learner.evaluate import vllm_engine
from learner.publish import Contents, exported

# The recipe's own set-up and engine (private to run_rl): the bench's steps are those `trimtab learn` takes.
from learner.rl.loop import RLRequest, check_request, kl_controller, rollout_engine, setup_run
from learner.rl.prompts import draw
from learner.rl.step import RLSteps, rl_step
from learner.rollout import RolloutEngine, Sampling
from trimtab.config import OptimConfig, TrimtabConfig
from trimtab.jsonl import Messages
from trimtab.simulation.suite import gold_reward
from trimtab.simulation.world import Split, default_world

WARMUP = 2
TIMED = 12
ROUNDS = 3
RESTARTS = 3
ROLLOUT_REPEATS = 8
REWARD = "trimtab.simulation.suite:gold_reward"
PROMPT_SEED = 21
TRIMTAB_PARTS = ("generate", "score", "measure", "train", "refit")
TRL_PARTS = ("generate", "score", "measure")
AGGREGATION_TO_TRL = {"sequence_mean": "grpo", "token_mean": "dapo"}


@dataclass(frozen=True)
class Setup:
    """What both sides share: the config, the prompts file, and each step's prompts in draw order."""

    config: TrimtabConfig
    scratch: Path  # a temporary directory for the bench's files
    prompts_file: Path
    step_prompts: list[list[Messages]]  # step k's prompts at [k - 1]
    warmup: int
    timed: int

    @property
    def steps(self) -> int:
        return self.warmup + self.timed

    @property
    def sampling(self) -> Sampling:
        rollout = self.config.learner.rl.rollout
        return Sampling(rollout.group_size, rollout.temperature, rollout.max_tokens, seed=0)


@dataclass(frozen=True)
class Run:
    """One side's timed steps: mean seconds per step, by part (the unmeasured rest under `rest`)."""

    seconds_per_step: float
    parts: dict[str, float]
    completion_tokens: float  # mean length of the completions
    score: float  # mean gold reward of the completions

    def split(self) -> str:
        return " / ".join(f"{name} {seconds:.2f}" for name, seconds in self.parts.items()) + " s"


@dataclass
class StepLog:
    """What one side recorded at the end of each optimiser step, in order."""

    ends: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)
    completion_tokens: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    drifts: list[float] = field(default_factory=list)  # trimtab's engine-vs-trainer log-prob gap

    def add(self, parts: dict[str, float], completion_tokens: float, score: float) -> None:
        self.ends.append(time.perf_counter())
        self.parts.append(parts)
        self.completion_tokens.append(completion_tokens)
        self.scores.append(score)

    def summary(self, warmup: int, rest: str) -> Run:
        timed = len(self.ends) - warmup
        if warmup < 1 or timed < 1:
            raise RuntimeError(f"{len(self.ends)} steps logged; need more than warmup={warmup} >= 1")
        wall = (self.ends[-1] - self.ends[warmup - 1]) / timed
        kept = self.parts[warmup:]
        parts = {name: statistics.fmean(p[name] for p in kept) for name in kept[0]}
        parts[rest] = wall - sum(parts.values())
        return Run(
            wall, parts, statistics.fmean(self.completion_tokens[warmup:]), statistics.fmean(self.scores[warmup:])
        )


@dataclass(frozen=True)
class Rates:
    """Rollout throughput of repeated generations of the same batch."""

    tokens_per_s: list[float]
    completion_tokens: float  # mean length over the timed repeats


@dataclass(frozen=True)
class TrimtabRound:
    run: Run
    refits: list[float]  # refit_s of the timed steps
    drift: float  # mean engine-vs-trainer log-prob gap of the timed steps
    engine_start_s: float
    rollout: Probe | None  # first round only
    restarts: list[float]  # first round only


@dataclass(frozen=True)
class TrlRound:
    run: Run
    init_s: float


def bench_rl(config: TrimtabConfig, warmup: int = WARMUP, timed: int = TIMED, rounds: int = ROUNDS) -> list[Comparison]:
    threads = config.learner.torch_threads or torch.get_num_threads()
    torch.set_num_threads(threads)  # both sides train in this process, on these threads
    ours: list[TrimtabRound] = []
    theirs: list[TrlRound] = []
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-rl-") as tmp:
        setup = bench_setup(config, Path(tmp), warmup, timed)
        for r in range(rounds):
            torch.set_num_threads(threads)  # as it was, whatever a vLLM start in this process changed
            ours.append(trimtab_round(setup, probe=r == 0))
            torch.set_num_threads(threads)
            theirs.append(trl_round(setup, Path(tmp) / "trl"))
    return [step_row(setup, ours, theirs, threads), rollout_row(setup, ours[0]), refit_row(ours)]


def bench_setup(config: TrimtabConfig, tmp: Path, warmup: int, timed: int) -> Setup:
    """Exactly the prompts the steps will draw, written as trimtab's prompts file."""
    rl = config.learner.rl
    steps = warmup + timed
    world_prompts = default_world().sample_prompts(steps * rl.rollout.prompts_per_step, PROMPT_SEED, split=Split.TRAIN)
    prompts: list[Messages] = [p.messages for p in world_prompts]
    prompts_file = tmp / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": list(p)}) + "\n" for p in prompts))
    n = rl.rollout.prompts_per_step
    step_prompts = [draw(prompts, n, seed=rl.rollout.seed, step=step) for step in range(1, steps + 1)]
    # Nothing is published (rl_step, not run_rl), but a scratch registry keeps the real one out of reach.
    registry = config.registry.model_copy(update={"root": tmp / "registry"})
    return Setup(config.model_copy(update={"registry": registry}), tmp, prompts_file, step_prompts, warmup, timed)


# trimtab


def trimtab_round(setup: Setup, *, probe: bool) -> TrimtabRound:
    """A fresh run from the base: start the rollout engine, (probe its rollouts,) step; (then restarts)."""
    config = setup.config
    request = RLRequest("grpo", setup.prompts_file, REWARD, config.model.path, steps=setup.steps)
    check_request(config, request)
    context = init_distributed(config.learner)
    try:
        run = setup_run(config, request, context, Console(stderr=True))
        with tempfile.TemporaryDirectory(prefix="trimtab-bench-rl-run-") as out:
            started = time.perf_counter()
            with rollout_engine(run, Path(out)) as engine:
                assert engine is not None, "one rank: this process owns the rollout engine"
                # The worker starts in the background and answers once its engine is up: time to that answer.
                engine.generate(setup.step_prompts[0][:1], Sampling(n=1, temperature=0.0, max_tokens=1, seed=0))
                engine_start_s = time.perf_counter() - started
                rollout = rollout_probe(engine, config, setup) if probe else None
                log = trimtab_steps(run.steps, engine, setup.steps)
        exports = [export_policy(run.steps, setup.scratch / f"policy-{k}") for k in range(RESTARTS)] if probe else []
    finally:
        shutdown(context)
    # The fresh engines start once the run's process group is gone, as a trainer's own engine would.
    restarts = [s + first_token_s(d, config, setup.step_prompts[0][0]) for d, s in exports]
    timed = slice(setup.warmup, None)
    return TrimtabRound(
        run=log.summary(setup.warmup, rest="other"),
        refits=[parts["refit"] for parts in log.parts[timed]],
        drift=statistics.fmean(log.drifts[timed]),
        engine_start_s=engine_start_s,
        rollout=rollout,
        restarts=restarts,
    )


def trimtab_steps(run: RLSteps, engine: RolloutEngine, steps: int) -> StepLog:
    log, controller = StepLog(), kl_controller(run.rl)
    for step in range(1, steps + 1):
        metrics, controller = rl_step(run, engine, step, controller)
        log.add(
            {name: metrics[f"{name}_s"] for name in TRIMTAB_PARTS},
            metrics["response_tokens_mean"],
            metrics["score_mean"],
        )
        log.drifts.append(metrics["engine_logp_drift_mean"])
    return log


def export_policy(run: RLSteps, directory: Path) -> tuple[Path, float]:
    """The policy written as a model directory, as a refit writes it; the directory and the seconds it took."""
    contents = Contents(run.tokenizer, run.lora, reward_model=False)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    with exported(run.actor.model, contents, run.context, directory=directory):
        pass
    return directory, time.perf_counter() - started


def first_token_s(model_dir: Path, config: TrimtabConfig, conversation: Messages) -> float:
    """Seconds from starting a fresh engine on `model_dir` (the rollout engine's settings: full weights,
    LoRA off, as learner.rl.loop starts it) to its first generated token."""
    from vllm import SamplingParams

    conversations: list[Any] = [list(conversation)]  # vLLM takes OpenAI-style message dicts
    started = time.perf_counter()
    with vllm_engine(model_dir, config.engine) as llm:
        llm.chat(conversations, SamplingParams(max_tokens=1), use_tqdm=False)
        seconds = time.perf_counter() - started
        del llm  # the last reference but vllm_engine's own: its exit then shuts the engine down
    return seconds


# Rollouts


@dataclass(frozen=True)
class Probe:
    """The rollout throughput of both generators on the same batch."""

    vllm: Rates
    hf: Rates


def rollout_probe(engine: RolloutEngine, config: TrimtabConfig, setup: Setup) -> Probe:
    """vLLM (the rollout engine) and HF generate on one step's batch, taking turns: a slow spell of the
    shared machine hits both."""
    conversations, sampling = setup.step_prompts[0], setup.sampling
    generators = (vllm_generation(engine, conversations, sampling), hf_generation(config, conversations, sampling))
    for generate in generators:
        generate(0)  # warm-up: the first request after start-up is slow (design.md)
    rates: tuple[list[float], list[float]] = ([], [])
    tokens: tuple[list[int], list[int]] = ([], [])
    for k in range(1, ROLLOUT_REPEATS + 1):
        for generate, side_rates, side_tokens in zip(generators, rates, tokens, strict=True):
            started = time.perf_counter()
            generated = generate(k)
            side_rates.append(generated / (time.perf_counter() - started))
            side_tokens.append(generated)
    sequences = ROLLOUT_REPEATS * len(conversations) * sampling.n
    vllm, hf = (Rates(r, sum(t) / sequences) for r, t in zip(rates, tokens, strict=True))
    return Probe(vllm, hf)


Generation = Callable[[int], int]  # repeat k -> generated tokens


def vllm_generation(engine: RolloutEngine, conversations: Sequence[Messages], sampling: Sampling) -> Generation:
    def generate(k: int) -> int:
        seeded = Sampling(sampling.n, sampling.temperature, sampling.max_tokens, seed=k * 1_000_003)
        return sum(len(r.response_ids) for r in engine.generate(conversations, seeded))

    return generate


def hf_generation(config: TrimtabConfig, conversations: Sequence[Messages], sampling: Sampling) -> Generation:
    """HF `generate` sampling the same batch: n per prompt, pure temperature sampling, left-padded prompts."""
    tokenizer = AutoTokenizer.from_pretrained(config.model.path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False) for c in conversations]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = model.generation_config.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos])
    torch.manual_seed(config.learner.train.seed)

    def generate(_: int) -> int:
        with torch.no_grad():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=sampling.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=sampling.max_tokens,
                num_return_sequences=sampling.n,
                pad_token_id=tokenizer.pad_token_id,
            )
        return completion_tokens(out[:, batch["input_ids"].shape[1] :], eos_ids)

    return generate


def completion_tokens(completions: torch.Tensor, eos_ids: torch.Tensor) -> int:
    """Tokens of each row up to and including its first end-of-turn (the whole row if none)."""
    is_eos = torch.isin(completions, eos_ids)
    width = completions.shape[1]
    lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, width)
    return int(lengths.sum())


# TRL


class PartTimer:
    """Seconds spent in TRL's named parts since the last `take`, and what its generations produced."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.lengths: list[int] = []
        self.scores: list[float] = []
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(TRL_PARTS, 0.0)
        self.lengths, self.scores = [], []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - started

    def take(self, log: StepLog) -> None:
        log.add(dict(self.seconds), statistics.fmean(self.lengths), statistics.fmean(self.scores))
        self.reset()


def trl_round(setup: Setup, out: Path) -> TrlRound:
    """TRL's GRPOTrainer from the base on the same prompts, in trimtab's draw order."""
    from datasets import Dataset

    timer, log = PartTimer(), StepLog()
    trainer_class = timed_trainer(timer)
    rows = [{"prompt": list(p)} for prompts in setup.step_prompts for p in prompts]
    started = time.perf_counter()
    trainer = trainer_class(
        model=str(setup.config.model.path),
        reward_funcs=gold_rewards,
        args=trl_args(setup.config, setup.steps, out),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(setup.config.model.path),
        callbacks=[_StepEnd(lambda: timer.take(log))],
    )
    init_s = time.perf_counter() - started
    trainer.remove_callback(PrinterCallback)  # its log lines would land in the middle of the report
    trainer.train()
    return TrlRound(log.summary(setup.warmup, rest="train+rest"), init_s)


def gold_rewards(prompts: list[Messages], completions: list[list[dict[str, str]]], **_: Any) -> list[float]:
    """The gold reward in TRL's reward-function convention (conversational: messages in, one float each)."""
    return [gold_reward(p, c[-1]["content"]) for p, c in zip(prompts, completions, strict=True)]


def timed_trainer(timer: PartTimer) -> type:
    """GRPOTrainer with its generation, scoring and no-grad forwards (the reference's) timed."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            with timer("generate"):
                result = super()._generate(*args, **kwargs)
            timer.lengths += [len(ids) for ids in result[1]]  # (prompt_ids, completion_ids, ...)
            return result

        def _calculate_rewards(self, *args: Any, **kwargs: Any) -> Any:
            with timer("score"):
                rewards = super()._calculate_rewards(*args, **kwargs)
            timer.scores += rewards[:, 0].tolist()
            return rewards

        def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():  # the training forward
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)
            with timer("measure"):
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)

    return TimedGRPOTrainer


def trl_args(config: TrimtabConfig, steps: int, out: Path) -> Any:
    """GRPOConfig for trimtab's GRPO step (see the module docstring for each equality)."""
    from trl import GRPOConfig

    rl, learner = config.learner.rl, config.learner
    answers = rl.rollout.prompts_per_step * rl.rollout.group_size
    micro = learner.train.micro_batch_size
    if answers % micro:
        raise ValueError(f"the micro-batch ({micro}) must divide a step's {answers} answers")
    adamw = OptimConfig()  # learner.rl.roles.constant_optimizer: these defaults, at learner.optim.lr
    return GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=answers // micro,
        steps_per_generation=answers // micro,  # one generation of `answers` per optimiser step
        num_generations=rl.rollout.group_size,
        num_iterations=rl.epochs,
        max_completion_length=rl.rollout.max_tokens,
        temperature=rl.rollout.temperature,
        top_p=1.0,
        top_k=0,
        loss_type=AGGREGATION_TO_TRL[rl.grpo.aggregation],
        beta=rl.kl.coef,
        use_bias_correction_kl=False,
        epsilon=rl.clip_ratio,
        importance_sampling_level="token",
        scale_rewards="group" if rl.grpo.scale_std else "none",
        learning_rate=learner.optim.lr,
        lr_scheduler_type="constant",
        weight_decay=adamw.weight_decay,
        adam_beta1=adamw.betas[0],
        adam_beta2=adamw.betas[1],
        optim="adamw_torch_fused",
        max_grad_norm=learner.optim.grad_clip,
        use_vllm=False,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        model_init_kwargs={"dtype": "float32"},
        shuffle_dataset=False,  # the dataset is in trimtab's draw order
        max_steps=steps,
        seed=learner.train.seed,
        dataloader_pin_memory=False,
        report_to="none",
        save_strategy="no",
        logging_steps=steps,
        disable_tqdm=True,
    )


class _StepEnd(TrainerCallback):
    def __init__(self, on_step: Callable[[], None]) -> None:
        self.on_step = on_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.on_step()


# Rows


def step_row(setup: Setup, ours: list[TrimtabRound], theirs: list[TrlRound], threads: int) -> Comparison:
    rl = setup.config.learner.rl.rollout
    mine = min((r.run for r in ours), key=lambda run: run.seconds_per_step)
    trl = min((r.run for r in theirs), key=lambda run: run.seconds_per_step)

    def runs(side: Sequence[Run]) -> str:
        return "/".join(f"{run.seconds_per_step:.2f}" for run in side)

    lengths = max(mine.completion_tokens, trl.completion_tokens) / min(mine.completion_tokens, trl.completion_tokens)
    caveat = f" (they differ by {lengths - 1:.0%}: the step times compare unequal work)" if lengths > 1.2 else ""
    return Comparison(
        name=(
            f"GRPO step, default model, {rl.prompts_per_step} prompts x {rl.group_size} answers, <= {rl.max_tokens}"
            f" tokens, T={rl.temperature}, {threads} threads, float32"
        ),
        unit="ms/step",
        candidate="trimtab (vLLM rollouts, refit in place)",
        candidate_value=mine.seconds_per_step * 1000,
        baseline="TRL GRPOTrainer (HF generate)",
        baseline_value=trl.seconds_per_step * 1000,
        higher_is_better=False,
        notes=(
            f"{setup.timed} steps timed after {setup.warmup} warm-up, best of runs {runs([r.run for r in ours])} vs"
            f" {runs([r.run for r in theirs])} s/step; per step trimtab {mine.split()}; TRL {trl.split()} (measure:"
            f" the reference forward; train+rest: forward+backward, optimiser, advantages, bookkeeping); mean"
            f" completion tokens {mine.completion_tokens:.1f} vs {trl.completion_tokens:.1f}{caveat}, mean gold"
            f" reward {mine.score:+.3f} vs {trl.score:+.3f}; one-off, not"
            f" counted: rollout-engine start {min(r.engine_start_s for r in ours):.1f} s vs TRL trainer set-up"
            f" {min(r.init_s for r in theirs):.1f} s; trimtab also measures the actor's log-probs before the"
            " update, TRL reuses its training forward"
        ),
    )


def rollout_row(setup: Setup, ours: TrimtabRound) -> Comparison:
    rl = setup.config.learner.rl.rollout
    assert ours.rollout is not None
    vllm, hf = ours.rollout.vllm, ours.rollout.hf
    return Comparison(
        name=(
            f"rollout generation, {rl.prompts_per_step} prompts x {rl.group_size} samples, T={rl.temperature},"
            f" <= {rl.max_tokens} tokens"
        ),
        unit="tokens/s",
        candidate="RolloutEngine (vLLM)",
        candidate_value=statistics.median(vllm.tokens_per_s),
        baseline="HF generate",
        baseline_value=statistics.median(hf.tokens_per_s),
        notes=(
            f"median of {len(vllm.tokens_per_s)} each, taking turns, after a warm-up; runs vLLM"
            f" {_span(vllm.tokens_per_s)}, HF {_span(hf.tokens_per_s)}; generated tokens up to end-of-turn,"
            f" mean per completion {vllm.completion_tokens:.1f} vs {hf.completion_tokens:.1f}"
        ),
    )


def refit_row(ours: list[TrimtabRound]) -> Comparison:
    refits = [s for r in ours for s in r.refits]
    restarts = ours[0].restarts
    return Comparison(
        name="new policy weights into the rollout engine, after each update (default model)",
        unit="ms",
        candidate="refit in place (export + reload_weights)",
        candidate_value=statistics.median(refits) * 1000,
        baseline="export + fresh vLLM engine to first token",
        baseline_value=min(restarts) * 1000,
        higher_is_better=False,
        notes=(
            f"refit: median of {len(refits)} timed steps ({min(refits):.2f}-{max(refits):.2f} s); restart: best of"
            f" {len(restarts)} ({_span(restarts, '.1f')} s); engine vs trainer log-prob gap after refits"
            f" {statistics.fmean(r.drift for r in ours):.1e} per token"
        ),
    )


def _span(values: Sequence[float], spec: str = ",.0f") -> str:
    return f"{min(values):{spec}}-{max(values):{spec}}"


def main() -> int:
    """`python -m bench.rl`: this benchmark alone, written to bench/results/rl/."""
    from trimtab.environment import apply_runtime_env

    apply_runtime_env()
    console = Console(stderr=True)
    console.print("bench: GRPO (trimtab vs TRL GRPOTrainer), rollouts (vLLM vs HF generate), refit vs restart")
    rows = bench_rl(simulation_config())
    table = write_report(rows, Path(__file__).resolve().parent / "results" / "rl")
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
