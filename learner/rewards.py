"""What scores an answer when no user has: a reward model (a `reward` version: the backbone with a scalar
head) or a scorer entry point (the operator's verifier or rubric; the simulation's gold reward). The RL
trainer's `--reward` and the gates' judges resolve to one of these.

    score = reward_from("ver_01...", registry)          # a reward model, loaded on first use
    score = reward_from("mypkg.verify:score", registry)  # (prompt, response) -> float, checked
    score = reward_from("grpc://host:50053", registry)   # a RewardService (`trimtab reward`) on another node
    score.batch(prompts, responses)                      # [float, ...]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from learner.batching import collate, tokenize_chat
from trimtab.config import ConfigError
from trimtab.config.reward_service import RewardServiceConfig
from trimtab.config.tls import TlsConfig
from trimtab.jsonl import Messages
from trimtab.registry import Registry, RegistryError
from trimtab.suite import Scorer, load_scorer


class RewardError(ConfigError):
    """A reward cannot be used; the message names the setting, the reward and why (`trimtab` exits 2)."""


class RewardModel:
    """A reward model's r(x, y), as the learner trains it: the chat template, the answer, end-of-turn; the
    scalar head read at the last token. Loaded once (float32, eval) and scored in batches."""

    def __init__(self, model_dir: Path, batch_size: int = 32) -> None:
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
        self.model: Any = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
        config = self.model.config
        self.pad_token_id = int(config.pad_token_id if config.pad_token_id is not None else config.eos_token_id)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Messages], responses: Sequence[str]) -> list[float]:
        sequences = [tokenize_chat(self.tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
        scores: list[float] = []
        for start in range(0, len(sequences), self.batch_size):
            batch = collate(sequences[start : start + self.batch_size], self.pad_token_id).to(self.model.device)
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            scores += logits[:, 0].float().tolist()
        return scores


@dataclass(frozen=True)
class Reward:
    """A reward source: `name` for logs and manifests, and `batch` to score answers to their prompts. A
    reward model is loaded on its first use, once per process (ranks that never score never load it)."""

    name: str
    scorer: Scorer | None = None
    model_dir: Path | None = None  # the reward model's directory (a critic starts from it)
    address: str | None = None  # a RewardService's host:port
    service: RewardServiceConfig | None = None  # how to call it: batch limit, deadline, API key
    tls: TlsConfig | None = None  # and with what TLS (None: plaintext)

    def batch(self, prompts: Sequence[Messages], responses: Sequence[str]) -> list[float]:
        if self.model_dir is not None:
            return _loaded(self.model_dir)(prompts, responses)
        if self.address is not None:
            settings = self.service or RewardServiceConfig()
            return _remote_scores(self.address, settings, self.tls or TlsConfig(), prompts, responses)
        assert self.scorer is not None
        return [self.scorer(p, r) for p, r in zip(prompts, responses, strict=True)]


@functools.lru_cache(maxsize=2)
def _loaded(model_dir: Path) -> RewardModel:
    return RewardModel(model_dir)


REMOTE = "grpc://"


def _remote_scores(
    address: str, settings: RewardServiceConfig, tls: TlsConfig, prompts: Sequence[Messages], responses: Sequence[str]
) -> list[float]:
    import grpc

    from trimtab.tls import grpc_channel
    from trimtab.v1 import common_pb2, reward_pb2, reward_pb2_grpc

    answers = [
        reward_pb2.ScoredAnswer(
            prompt=common_pb2.Prompt(chat=common_pb2.Chat(messages=[common_pb2.ChatMessage(**m) for m in prompt])),
            response=response,
        )
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    scores: list[float] = []
    metadata = client_metadata(settings)
    with grpc_channel(address, tls) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        for start in range(0, len(answers), settings.max_answers):
            request = reward_pb2.ScoreRequest(answers=answers[start : start + settings.max_answers])
            try:
                scores += stub.Score(request, timeout=settings.call_timeout_s, metadata=metadata).scores
            except grpc.RpcError as exc:
                raise RewardError(
                    f"--reward {REMOTE}{address}: Score failed: {exc.code().name}: {exc.details()}"
                ) from None
    return scores


def client_metadata(settings: RewardServiceConfig) -> tuple[tuple[str, str], ...]:
    """The API key a RewardService caller presents (`reward_service.client_key`), if any."""
    key = settings.client_key
    return (("authorization", f"Bearer {key.get_secret_value()}"),) if key else ()


def reward_from(
    spec: str, registry: Registry, service: RewardServiceConfig | None = None, tls: TlsConfig | None = None
) -> Reward:
    """`spec` is 'grpc://HOST:PORT' (a RewardService), 'module:function' (a scorer entry point) or a
    `reward` version id of `registry`."""
    if spec.startswith(REMOTE):
        address = spec.removeprefix(REMOTE)
        if ":" not in address:
            raise RewardError(f"--reward {spec}: expected {REMOTE}HOST:PORT")
        return Reward(f"reward service {address}", address=address, service=service, tls=tls)
    if ":" in spec:
        return Reward(f"scorer {spec}", scorer=load_scorer(spec))
    try:
        is_version = registry.path(spec).is_dir()
    except RegistryError:
        is_version = False
    if not is_version:
        raise RewardError(
            f"--reward {spec}: neither 'module:function' nor a version of the registry at {registry.root}"
        )
    return Reward(f"reward model {spec}", model_dir=reward_model_dir(registry, spec, "--reward"))


def reward_model_dir(registry: Registry, version: str, setting: str) -> Path:
    """The directory of `version`, a reward model; RewardError naming `setting` if it is missing or of another
    kind (a policy scores nothing)."""
    try:
        manifest = registry.get(version)
    except RegistryError as exc:
        raise RewardError(f"{setting} {version}: {exc}") from None
    if manifest.kind != "reward":
        raise RewardError(f"{setting} {version}: a {manifest.kind} version, not a reward model (train one: --algo rm)")
    return registry.path(version)
