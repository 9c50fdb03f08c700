"""Evaluating a policy against its reference on held-out prompts: the evaluation suite's (the operator's
own, or the simulation's), scored by its judge.

Three numbers per policy, each against the reference model (the served base, or the version the policy
was trained from), on the same held-out prompts:

- **judged reward of greedy outputs**: vLLM greedy decoding (T=0), each answer scored by a judge
  (`trimtab.suite.Scorer`: a verifier, a rubric, the simulation's gold reward); the mean;
- **KL(pi || pi_ref)** in nats per sequence, estimated on samples from the policy (see `kl_estimate`);
- **win rate**: the share of prompts whose policy greedy answer scores higher than the reference's,
  ties counting one half (so a model against itself scores exactly 0.5).

    evaluations = evaluate_versions({"dpo": dpo_dir}, reference_dir, suite.heldout, judge, config.engine)
    evaluations["dpo"].mean_reward, evaluations["dpo"].kl, evaluations["dpo"].win_rate

Without a judge the answers and the KL are still measured; the reward numbers are NaN. The pieces
(greedy answers, samples, KL, win rate) are small functions of their inputs so that the closed loop's
gates can call them on an engine and models they already hold.
"""

from __future__ import annotations

import contextlib
import gc
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from learner.batching import TokenizedExample, collate
from learner.logprobs import batch_token_logprobs
from trimtab.config import EngineConfig
from trimtab.engine import offline_llm
from trimtab.jsonl import Messages
from trimtab.registry import detect_kind
from trimtab.registry.manifest import MANIFEST, Manifest
from trimtab.suite import Scorer

if TYPE_CHECKING:
    from vllm import LLM

MAX_TOKENS = 64  # longest answer generated: both sides of a comparison are cut alike; the world answers in 3-40 words


@dataclass(frozen=True)
class SampledResponse:
    """One answer sampled from a model, as the exact token ids the engine saw and produced."""

    prompt_ids: list[int]  # the chat-templated prompt
    response_ids: list[int]  # the sampled tokens, end-of-turn included when generated


@dataclass(frozen=True)
class KLEstimate:
    """A Monte Carlo estimate of KL(pi || pi_ref) in nats per sequence, with its standard error."""

    mean: float
    stderr: float
    samples: int


@dataclass(frozen=True)
class Evaluation:
    """A policy against its reference on the same held-out prompts."""

    answers: tuple[str, ...]  # the policy's greedy answers, one per prompt
    reference_answers: tuple[str, ...]  # the reference's
    kl: KLEstimate  # KL(policy || reference), nats per sequence
    rewards: tuple[float, ...] = ()  # the judge's score of each answer (empty: no judge)
    reference_rewards: tuple[float, ...] = ()

    @property
    def prompts(self) -> int:
        return len(self.answers)

    @property
    def judged(self) -> bool:
        return bool(self.rewards)

    @property
    def mean_reward(self) -> float:
        return _mean(self.rewards)

    @property
    def reference_mean_reward(self) -> float:
        return _mean(self.reference_rewards)

    @property
    def reward_gain(self) -> float:
        return self.mean_reward - self.reference_mean_reward

    @property
    def win_rate(self) -> float:
        """P(policy greedy reward > reference greedy reward), ties counting 1/2; NaN without a judge."""
        return win_rate(self.rewards, self.reference_rewards) if self.judged else math.nan

    @property
    def reward_gain_stderr(self) -> float:
        """Standard error of the mean per-prompt reward difference (paired)."""
        gains = [a - b for a, b in zip(self.rewards, self.reference_rewards, strict=True)]
        if len(gains) < 2:
            return math.nan
        return float(torch.tensor(gains).std()) / math.sqrt(len(gains))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def judge_answers(scorer: Scorer, prompts: Sequence[Messages], answers: Sequence[str]) -> list[float]:
    return [scorer(prompt, answer) for prompt, answer in zip(prompts, answers, strict=True)]


def win_rate(policy_rewards: Sequence[float], reference_rewards: Sequence[float]) -> float:
    """Share of paired answers where the policy's reward is higher; a tie counts one half."""
    pairs = list(zip(policy_rewards, reference_rewards, strict=True))
    if not pairs:
        raise ValueError("win_rate of no pairs")
    return sum(1.0 if p > r else 0.5 if p == r else 0.0 for p, r in pairs) / len(pairs)


# Generation (vLLM)


def greedy_answers(llm: LLM, prompts: Sequence[Messages], max_tokens: int = MAX_TOKENS) -> list[str]:
    """The engine's greedy (T=0) answer to each prompt, through the model's chat template."""
    from vllm import SamplingParams

    conversations: list[Any] = [list(prompt) for prompt in prompts]  # vLLM takes OpenAI-style dicts
    outputs = llm.chat(conversations, SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
    return [output.outputs[0].text for output in outputs]


def sample_responses(
    llm: LLM, prompts: Sequence[Messages], seed: int, max_tokens: int = MAX_TOKENS
) -> list[SampledResponse]:
    """One answer per prompt sampled from the model's own distribution: T=1, no top-k / top-p."""
    from vllm import SamplingParams

    conversations: list[Any] = [list(prompt) for prompt in prompts]
    params = [SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=seed + i) for i in range(len(prompts))]
    outputs = llm.chat(conversations, params, use_tqdm=False)
    return [SampledResponse(list(out.prompt_token_ids or []), list(out.outputs[0].token_ids)) for out in outputs]


@contextlib.contextmanager
def vllm_engine(model_dir: Path, config: EngineConfig, *, in_process: bool = False) -> Iterator[LLM]:
    """An offline vLLM engine on `model_dir` (full weights, LoRA off), shut down on exit; `in_process` as in
    `trimtab.engine.offline_llm`.

    Evaluation swaps full weights only (`load_weights`), so the engine's LoRA support is turned off:
    it costs memory and speed and, on vLLM 0.32's CPU kernels, is buggy for plain requests.
    """
    llm = offline_llm(model_dir, config.model_copy(update={"lora": False}), in_process=in_process)
    try:
        yield llm
    finally:
        # Dropping the last reference shuts the engine down (and its engine-core process, if it has one).
        del llm
        gc.collect()


def load_weights(llm: LLM, model_dir: Path) -> None:
    """Replace the engine's weights with those of `model_dir` (same architecture) and drop cached KV:
    a prefix cached under the old weights must never be reused under the new ones."""
    llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
    llm.reset_prefix_cache()


# Log-probs and KL (transformers, float32)


def load_hf_model(model_dir: Path) -> PreTrainedModel:
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval()


@torch.no_grad()
def response_logps(
    model: PreTrainedModel, samples: Sequence[SampledResponse], pad_token_id: int, batch_size: int = 32
) -> torch.Tensor:
    """sum_t log pi(y_t | x, y_<t) over each sample's response tokens, shape (N,), float32."""
    sequences = [
        TokenizedExample(s.prompt_ids + s.response_ids, [0] * len(s.prompt_ids) + [1] * len(s.response_ids))
        for s in samples
    ]
    sums = []
    for start in range(0, len(sequences), batch_size):
        batch = collate(sequences[start : start + batch_size], pad_token_id)
        token_logps, loss_mask = batch_token_logprobs(model, batch)
        sums.append((token_logps * loss_mask).sum(-1).float().cpu())
    return torch.cat(sums)


def kl_estimate(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    samples: Sequence[SampledResponse],
    pad_token_id: int,
    batch_size: int = 32,
) -> KLEstimate:
    """KL(pi || pi_ref) per sequence, estimated on answers y_i sampled from the policy pi (T=1):

        KL ~= (1/N) sum_i sum_t [ log pi(y_i,t | x_i, y_i,<t) - log pi_ref(y_i,t | x_i, y_i,<t) ]

    the plain Monte Carlo (k1) estimator, unbiased for E_x KL(pi(.|x) || pi_ref(.|x)) over sequences
    of at most the generation's max_tokens (a truncated answer counts the tokens it has). Both
    log-probs are recomputed by the transformers models in float32 on the engine's exact token ids, so
    no re-tokenisation and no sampler post-processing enters. One sample per prompt; the standard
    error is over prompts. Single estimates can be negative; their mean is not, in expectation.
    """
    if not samples:
        raise ValueError("kl_estimate needs at least one sample")
    log_ratios = response_logps(policy, samples, pad_token_id, batch_size)
    log_ratios -= response_logps(reference, samples, pad_token_id, batch_size)
    stderr = float(log_ratios.std()) / math.sqrt(len(samples)) if len(samples) > 1 else math.nan
    return KLEstimate(float(log_ratios.mean()), stderr, len(samples))


# Whole evaluations


@dataclass(frozen=True)
class Reference:
    """The reference side of evaluations, computed once: its greedy answers to the prompts and its
    transformers model (the KL pass's denominator)."""

    answers: tuple[str, ...]
    model: PreTrainedModel
    pad_id: int

    @classmethod
    def measured(cls, llm: LLM, directory: Path, prompts: Sequence[Messages]) -> Reference:
        """`directory`'s answers from `llm`, which must hold `directory`'s weights (an engine started on it)."""
        model = load_hf_model(directory)
        return cls(tuple(greedy_answers(llm, prompts)), model, _pad_token_id(model))


def evaluate_versions(
    policies: Mapping[str, Path],
    reference_dir: Path,
    prompts: Sequence[Messages],
    scorer: Scorer | None,
    engine: EngineConfig,
    seed: int = 0,
) -> dict[str, Evaluation]:
    """Each policy directory (full weights or a LoRA adapter) against `reference_dir`, by name; the
    answers scored by `scorer` (None: not judged). One vLLM engine serves them all in turn (see
    `evaluate_on`)."""
    with vllm_engine(reference_dir, engine) as llm:
        reference = Reference.measured(llm, reference_dir, prompts)
        return evaluate_on(llm, reference, policies, prompts, scorer, seed)


def evaluate_on(
    llm: LLM,
    reference: Reference,
    policies: Mapping[str, Path],
    prompts: Sequence[Messages],
    scorer: Scorer | None,
    seed: int = 0,
) -> dict[str, Evaluation]:
    """`evaluate_versions` on an engine the caller holds (the online gates keep one for the whole run): each
    policy's weights are loaded into it in turn, much faster than a fresh engine per model."""
    with tempfile.TemporaryDirectory(prefix="trimtab-eval-") as scratch:
        full = {name: full_weights_dir(path, Path(scratch) / name) for name, path in policies.items()}
        answers: dict[str, list[str]] = {}
        samples: dict[str, list[SampledResponse]] = {}
        for name, path in full.items():
            load_weights(llm, path)
            answers[name] = greedy_answers(llm, prompts)
            samples[name] = sample_responses(llm, prompts, seed)
        reference_rewards = tuple(judge_answers(scorer, prompts, reference.answers)) if scorer else ()
        return {
            name: Evaluation(
                answers=tuple(answers[name]),
                reference_answers=reference.answers,
                kl=kl_estimate(load_hf_model(full[name]), reference.model, samples[name], reference.pad_id),
                rewards=tuple(judge_answers(scorer, prompts, answers[name])) if scorer else (),
                reference_rewards=reference_rewards,
            )
            for name in full
        }


def evaluate(
    policy_dir: Path, reference_dir: Path, prompts: Sequence[Messages], scorer: Scorer | None, engine: EngineConfig
) -> Evaluation:
    """One policy against its reference (see `evaluate_versions`)."""
    return evaluate_versions({"policy": policy_dir}, reference_dir, prompts, scorer, engine)["policy"]


def full_weights_dir(model_dir: Path, scratch: Path) -> Path:
    """`model_dir` itself when it holds full weights; for a LoRA adapter, the adapter merged into its
    base (the registry manifest's `base` version, else the adapter config's base path) under `scratch`."""
    if detect_kind(model_dir) == "full":
        return model_dir
    from peft import PeftConfig, PeftModel

    manifest_file = model_dir / MANIFEST
    if manifest_file.is_file() and (base_id := Manifest.model_validate_json(manifest_file.read_text()).base):
        base_dir = model_dir.parent / base_id
    else:
        base_dir = Path(str(PeftConfig.from_pretrained(str(model_dir)).base_model_name_or_path))
    merged = PeftModel.from_pretrained(load_hf_model(base_dir), str(model_dir)).merge_and_unload()
    merged.save_pretrained(scratch)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(scratch)
    return scratch


def _pad_token_id(model: PreTrainedModel) -> int:
    config = model.config
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    return int(pad)
