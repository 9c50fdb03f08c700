"""Generating responses with vLLM for the learner (SPIN's self-play side), in a child process.

vLLM starts its own engine process and, under torchrun, would inherit the ranks' rendezvous variables;
a child process with those removed keeps it apart from the training process group, and frees its
memory (KV cache included) when it exits. Run as `python -m learner.generation REQUEST.json OUT.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from learner.batching import Messages
from trimtab.config import EngineConfig
from trimtab.errors import TrimtabError

# Set by torchrun for its workers; vLLM must not see them (it would try to join that world).
TORCHRUN_VARIABLES = frozenset({
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
})  # fmt: skip


@dataclass(frozen=True)
class GenerationRequest:
    model_dir: str
    adapter_dir: str | None  # a LoRA adapter on model_dir, or None for the full model
    conversations: list[list[dict[str, str]]]
    max_tokens: int
    temperature: float
    seed: int
    engine: dict[str, Any]  # EngineConfig, as JSON


def generate(
    model_dir: Path,
    conversations: Sequence[Messages],
    engine: EngineConfig,
    *,
    max_tokens: int,
    temperature: float,
    seed: int,
    adapter_dir: Path | None = None,
) -> list[str]:
    """One response per conversation, decoded without special tokens, from a vLLM child process."""
    request = GenerationRequest(
        str(model_dir),
        str(adapter_dir) if adapter_dir else None,
        [list(map(dict, conversation)) for conversation in conversations],
        max_tokens,
        temperature,
        seed,
        engine.model_dump(mode="json"),
    )
    responses: list[str] = run_isolated("learner.generation", asdict(request))
    return responses


class Interrupted(TrimtabError):
    """The caller asked to stop while a child process was running; the child was killed."""


def run_isolated(module: str, payload: dict[str, Any], should_stop: Callable[[], bool] = lambda: False) -> Any:
    """Run `python -m module REQUEST.json OUT.json` without torchrun's variables; its JSON answer.

    The child runs in its own session, so a signal meant for our process group (Ctrl-C, a supervisor's
    SIGTERM) does not kill it half-way; `should_stop` is polled instead, and a stop kills the child and
    raises Interrupted."""
    environment = {name: value for name, value in os.environ.items() if name not in TORCHRUN_VARIABLES}
    with tempfile.TemporaryDirectory(prefix="trimtab-isolated-") as scratch:
        request_path, out_path, log_path = (Path(scratch) / name for name in ("request.json", "out.json", "log"))
        request_path.write_text(json.dumps(payload))
        command = [sys.executable, "-m", module, str(request_path), str(out_path)]
        with log_path.open("w") as log:
            child = subprocess.Popen(
                command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                while child.poll() is None:
                    if should_stop():
                        raise Interrupted(f"{module} stopped: a stop was requested")
                    time.sleep(0.2)
            finally:
                # The whole session: vLLM's engine-core and worker processes outlive a killed child
                # (seen: orphaned workers holding 2 GB after the learner was stopped mid-gate).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        if child.returncode != 0:
            tail = "\n".join(log_path.read_text().splitlines()[-15:])
            raise TrimtabError(f"{module} failed (exit {child.returncode}):\n{tail}")
        return json.loads(out_path.read_text())


def _serve_request(request: GenerationRequest) -> list[str]:
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    from trimtab.engine import offline_llm

    engine = EngineConfig.model_validate({**request.engine, "lora": request.adapter_dir is not None})
    llm = offline_llm(Path(request.model_dir), engine, in_process=True)  # this process exists for it
    lora = LoRARequest("learner", 1, request.adapter_dir) if request.adapter_dir else None
    params = SamplingParams(temperature=request.temperature, max_tokens=request.max_tokens, seed=request.seed)
    conversations: list[Any] = request.conversations  # vLLM takes OpenAI-style message dicts
    outputs = llm.chat(conversations, params, use_tqdm=False, lora_request=lora)
    return [output.outputs[0].text for output in outputs]


if __name__ == "__main__":
    request_file, out_file = sys.argv[1:3]
    answer = _serve_request(GenerationRequest(**json.loads(Path(request_file).read_text())))
    Path(out_file).write_text(json.dumps(answer))
