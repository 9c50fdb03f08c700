"""The Engine protocol over vLLM's AsyncLLM, running in this process (its engine core in a child)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from vllm import RequestOutput, SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.inputs import tokens_input
from vllm.logprobs import FlatLogprobs, SampleLogprobs
from vllm.lora.request import LoRARequest
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.v1.metrics.stats import RequestStateStats

from serving.protocol import EngineDelta, EngineRequest, EngineStopped, PauseMode, VersionSpan
from trimtab.config import EngineConfig
from trimtab.engine import engine_kwargs


class VllmEngine:
    """One AsyncLLM; versions are vLLM weight-version labels, so spans come from the engine itself."""

    def __init__(self, llm: AsyncLLM) -> None:
        self._llm = llm
        self._tokenizer: Any = llm.get_tokenizer()
        self._adapters: dict[str, LoRARequest] = {}
        self._next_lora_id = 1

    @classmethod
    async def start(cls, model_path: Path, config: EngineConfig, version: str, cpus_for_server: int) -> VllmEngine:
        # vLLM's CPU backend reads these when it spawns its engine core (no-ops on GPUs). Without thread
        # binding (trimtab/environment.py) the reservation no longer sizes the worker's OpenMP pool,
        # so the thread count says it: the cores minus those left to gRPC.
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(cpus_for_server)
        if os.environ.get("VLLM_CPU_OMP_THREADS_BIND") == "nobind":
            os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) - cpus_for_server))
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(model_path, config)))
        # Every output batch is stamped with this label; swaps change it between pause and resume.
        await llm.update_weight_version(version)
        return cls(llm)

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        rendered = self._tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return list(self._tokenizer(rendered, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text)["input_ids"])

    def _text(self, token_ids: list[int]) -> str:
        """A whole answer's text, as vLLM's detokenizer would have built it (special tokens left out)."""
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=True))

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        """Each token's own text (a partial character decodes to U+FFFD, as vLLM's OpenAI server shows it)."""
        return list(self._tokenizer.batch_decode([[token] for token in token_ids]))

    async def generate(self, request: EngineRequest) -> AsyncGenerator[EngineDelta, None]:
        sampling = request.sampling
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            # The sampled token's own logprob (processed: engine.logprobs_mode), and the likeliest others if asked.
            logprobs=request.top_logprobs,
            flat_logprobs=True,  # kept as plain lists inside vLLM: no dict and Logprob object per token
            # FINAL_ONLY reports every token's logprob and the weight-version spans at the end.
            output_kind=RequestOutputKind.DELTA if request.stream else RequestOutputKind.FINAL_ONLY,
            # A whole answer is decoded once at the end (_text). Detokenizing as it goes serves only streams
            # and stop strings; it also decodes every sampled token alone for its logprob entry, which
            # nothing here reads.
            detokenize=request.stream or bool(sampling.stop),
            skip_clone=True,  # built for this request alone: vLLM's defensive deep copy would be wasted work
        )
        # Rendered already (token ids): vLLM adds it on the event loop. A raw TokensPrompt would go through
        # its renderer's thread pool, a thread hand-off per request. With the decoding above: 16% less of
        # this process's CPU a request (docs/measurements.md#serving).
        prompt = tokens_input(list(request.prompt_token_ids))
        lora = self._adapters.get(request.adapter) if request.adapter else None
        # Cancelling this generator (client gone, deadline) aborts the request inside vLLM.
        try:
            async for output in self._llm.generate(prompt, params, request.request_id, lora_request=lora):
                completion = output.outputs[0]
                token_ids = list(completion.token_ids)
                logprobs = _sampled_logprobs(completion.logprobs)
                spans = [VersionSpan(s.version, s.start, s.end) for s in completion.weight_versions or ()]
                yield EngineDelta(
                    completion.text if params.detokenize else self._text(token_ids),
                    token_ids,
                    logprobs,
                    completion.finish_reason,
                    spans,
                    _first_token_s(output),
                    _top_logprobs(completion.logprobs) if request.top_logprobs else (),
                )
        except EngineDeadError as exc:
            raise EngineStopped(str(exc)) from exc

    async def swap_weights(self, weights_dir: Path, version: str, mode: PauseMode) -> float:
        """Pause, reload the weights from a safetensors directory, relabel, resume; returns the stall in s.

        clear_cache=True is required with mode 'keep': frozen requests must recompute their KV under
        the new weights, or they continue on stale cache (design.md).
        """
        started = time.perf_counter()
        await self._llm.pause_generation(mode=mode, clear_cache=True)
        try:
            await self._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(weights_dir)})
            await self._llm.update_weight_version(version)
        finally:
            await self._llm.resume_generation()
        return time.perf_counter() - started

    async def add_adapter(self, name: str, path: Path) -> None:
        """Load an adapter under `name`. Names are version ids, whose weights never change, so a name that
        is still loaded (e.g. re-promoted within the retirement grace period) is simply reused."""
        if name in self._adapters:
            return
        request = LoRARequest(name, self._next_lora_id, str(path))
        self._next_lora_id += 1
        await self._llm.add_lora(request)
        self._adapters[name] = request

    async def remove_adapter(self, name: str) -> None:
        request = self._adapters.pop(name)
        await self._llm.remove_lora(request.lora_int_id)

    def shutdown(self) -> None:
        self._llm.shutdown()


def _first_token_s(output: RequestOutput) -> float | None:
    """vLLM's own time to first token, once the request has finished (None without engine stats)."""
    stats = output.metrics
    if not output.finished or not isinstance(stats, RequestStateStats) or not stats.first_token_latency:
        return None
    return float(stats.first_token_latency)


def _sampled_logprobs(steps: SampleLogprobs | None) -> list[float]:
    """One logprob per new token: each position's first entry is the sampled token's."""
    if isinstance(steps, FlatLogprobs):
        return [
            steps.logprobs[start]
            for start, end in zip(steps.start_indices, steps.end_indices, strict=True)
            if end > start
        ]
    return [next(iter(step.values())).logprob for step in steps or () if step]


def _top_logprobs(steps: SampleLogprobs | None) -> list[list[tuple[int, float]]]:
    """Per new token, the likeliest tokens there, best first: a position's entries after the sampled one
    (vLLM lists the sampled token first, then the top k by rank)."""
    if steps is None:
        return []
    if not isinstance(steps, FlatLogprobs):  # generate() always asks for flat logprobs
        raise TypeError(f"expected vLLM's FlatLogprobs, got {type(steps).__name__}")
    return [
        list(zip(steps.token_ids[start + 1 : end], steps.logprobs[start + 1 : end], strict=True))
        for start, end in zip(steps.start_indices, steps.end_indices, strict=True)
        if end > start
    ]
