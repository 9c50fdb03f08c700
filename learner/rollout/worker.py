"""The rollout engine's process: vLLM's offline engine on the policy's starting weights, answering the
trainer's commands over a local socket until told to stop. Run by `learner.rollout.engine`, as
`python -m learner.rollout.worker SOCKET SETUP.json` ({"model_dir", "engine"}; `learner.worker_process`).

Commands: ("generate", (conversations, Sampling)) -> [Rollout]; ("load_weights", directory) replaces
the full weights in place (and drops cached KV, which belongs to the old weights); ("load_adapter",
directory) serves a new LoRA adapter, under a name never used before (vLLM caches adapters by name), and
drops the previous one; ("stop", None). A failing command answers ("error", traceback); the directory
of a refit is checked before vLLM sees it, since a reload that fails inside vLLM takes its engine down.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learner.rollout.records import Rollout, Sampling
from learner.worker_process import listen, setup
from trimtab.config import EngineConfig
from trimtab.engine import offline_llm
from trimtab.registry import detect_kind


@dataclass
class Worker:
    llm: Any  # vllm.LLM
    adapter: Any = None  # the LoRARequest serving now, if the policy is an adapter
    adapters_loaded: int = 0
    tokenizer: Any = field(init=False)

    def __post_init__(self) -> None:
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, conversations: Sequence[Sequence[dict[str, str]]], sampling: Sampling) -> list[Rollout]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [self._render(conversation) for conversation in conversations]
        requests, params = [], []
        for i, ids in enumerate(prompts):
            for k in range(sampling.n):
                requests.append(TokensPrompt(prompt_token_ids=ids))
                params.append(
                    SamplingParams(
                        temperature=sampling.temperature,
                        max_tokens=sampling.max_tokens,
                        seed=sampling.seed + i * sampling.n + k,
                        logprobs=0,  # the sampled token's own log-prob, processed (after temperature)
                    )
                )
        outputs = self.llm.generate(requests, params, use_tqdm=False, lora_request=self.adapter)
        rollouts = []
        for j, output in enumerate(outputs):
            completion = output.outputs[0]
            rollouts.append(
                Rollout(
                    prompt=j // sampling.n,
                    prompt_ids=tuple(prompts[j // sampling.n]),
                    response_ids=tuple(completion.token_ids),
                    logprobs=tuple(next(iter(step.values())).logprob for step in completion.logprobs or ()),
                    text=completion.text,
                    truncated=completion.finish_reason == "length",
                )
            )
        return rollouts

    def load_weights(self, directory: str) -> None:
        _expect(directory, "full")  # checked here: a reload that fails inside vLLM kills its engine
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": directory})
        self.llm.reset_prefix_cache()

    def load_adapter(self, directory: str) -> None:
        from vllm.lora.request import LoRARequest

        _expect(directory, "lora")
        number = self.adapters_loaded + 1
        adapter = LoRARequest(f"policy-{number}", number, directory)
        self.llm.llm_engine.add_lora(adapter)  # raises before anything changes if it cannot load
        previous, self.adapter, self.adapters_loaded = self.adapter, adapter, number
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)

    def _render(self, conversation: Sequence[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(conversation), add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _expect(directory: str, kind: str) -> None:
    found = detect_kind(Path(directory))  # RegistryError for a directory that is neither
    if found != kind:
        raise ValueError(f"{directory} holds a {found} model, not the {kind} weights this engine refits")


def main(argv: Sequence[str]) -> None:
    socket, settings = setup(argv)
    engine = EngineConfig.model_validate(settings["engine"])
    worker = Worker(offline_llm(Path(settings["model_dir"]), engine, in_process=True))  # this process is the engine
    handlers = {
        "generate": lambda payload: worker.generate(*payload),
        "load_weights": worker.load_weights,
        "load_adapter": worker.load_adapter,
    }
    listen(socket, handlers)


if __name__ == "__main__":
    main(sys.argv)
