"""Serving benchmarks: the gRPC tier vs the bare engine, and a hot swap vs restarting the engine.

Both sides run in this process on the same model, prompts and load (64 concurrent greedy requests
over held-out prompts, three rounds each), one after the other, so they never share the CPU. CPU is
counted over this process and its children (vLLM's engine core) while the rounds run; the tier's gRPC
client runs in a process of its own, which is not counted (in this process it would also have shared
the tier's interpreter lock). The bare engine is measured at its best: it asks for final outputs only,
passes rendered token prompts, and runs with every core and with the tier's engine thread count, the
faster of the two counting; a second row compares the tier with the bare engine at the tier's thread count.
Each side's start-up heap is frozen once it serves, as `trimtab serve` and vLLM's OpenAI server do: unfrozen,
the collector's full collections walk the ~750,000 objects imports left (~0.3 s each, one every ~1,300
requests here), which no deployed server pays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil

from bench.report import Comparison
from trimtab.config import TrimtabConfig
from trimtab.engine import engine_kwargs
from trimtab.heap import freeze_startup_heap
from trimtab.ports import free_port
from trimtab.records import purge_prefix, redis_client
from trimtab.registry import PointerStore, Registry
from trimtab.simulation.world import Split, World
from trimtab.testing import perturbed_copy
from trimtab.v1 import common_pb2, inference_pb2, inference_pb2_grpc

CONCURRENCY = 64
MAX_TOKENS = 64
ROUNDS = 3  # of CONCURRENCY requests each: one round lasts about two seconds here, too short to be steady
TRIES = 2  # measurements per engine, the better counting (see _measure)
WARMUP = 4  # requests before each measurement
REQUESTS = TRIES * (WARMUP + ROUNDS * CONCURRENCY)  # what one `_measure` sends


@dataclass(frozen=True)
class Load:
    tokens: int
    seconds: float
    latencies: list[float]
    cpu_s: float  # user + system CPU of this process and its children over the rounds
    process_cpu_s: float  # the part of cpu_s spent in this process: the engine's front end and, for the tier, the tier

    @property
    def process_cpu_s_per_1k_tokens(self) -> float:
        return 1000 * self.process_cpu_s / self.tokens

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def cpu_s_per_1k_tokens(self) -> float:
        return 1000 * self.cpu_s / self.tokens

    def percentile(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[int(q) - 1]


CpuClock = Callable[[], tuple[float, float]]  # CPU seconds of the measured processes in all, and of the main one


async def _measure(one: Callable[[int], Awaitable[int]], n: int, cpu: CpuClock | None = None) -> Load:
    """The better of TRIES measurements of ROUNDS rounds: an engine's first seconds after it starts ran at
    0.6-0.8x its later pace here, for the bare engine and the tier alike (and the bare side used to get a
    second chance, its other thread count, that the tier did not). CPU by `cpu`; this process's by default."""
    loads = [await _measure_once(one, n, cpu or _cpu_s) for _ in range(TRIES)]
    return max(loads, key=lambda load: load.tokens_per_s)


async def _measure_once(one: Callable[[int], Awaitable[int]], n: int, cpu: CpuClock) -> Load:
    latencies: list[float] = []

    async def timed(i: int) -> int:
        started = time.perf_counter()
        tokens = await one(i)
        latencies.append(time.perf_counter() - started)
        return tokens

    await asyncio.gather(*(timed(i) for i in range(WARMUP)))
    latencies.clear()
    tokens, seconds = 0, 0.0
    before = cpu()
    for _ in range(ROUNDS):
        started = time.perf_counter()
        tokens += sum(await asyncio.gather(*(timed(i) for i in range(n))))
        seconds += time.perf_counter() - started
    after = cpu()
    return Load(tokens, seconds, latencies, after[0] - before[0], after[1] - before[1])


def _cpu_s(root: psutil.Process | None = None, skip: Container[int] = ()) -> tuple[float, float]:
    """User + system CPU seconds of `root` (this process by default) and every live child of it whose pid is
    not in `skip` (vLLM's engine core runs in one), and of `root` alone."""
    root = root or psutil.Process()
    total = own = 0.0
    for process in (root, *root.children(recursive=True)):
        if process.pid in skip:
            continue
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if process is root:
            own = times.user + times.system
    return total, own


async def _bare_engine(model_path: Path, config: TrimtabConfig, prompts: list[Any], cores_left: int) -> Load:
    """AsyncLLM alone, leaving `cores_left` cores out of its worker's threads (as serving.cpu_cores_for_server)."""
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import tokens_input
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    # Both knobs, so the count holds with vLLM's thread binding (the reservation) and without it.
    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(cores_left)
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) - cores_left))
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(model_path, config.engine)))
    freeze_startup_heap()  # as vLLM's own OpenAI server does once it starts
    tokenizer: Any = llm.get_tokenizer()

    async def one(i: int) -> int:
        # FINAL_ONLY: no output object and no wake-up per token, the cheapest way to wait for whole answers;
        # one SamplingParams per request (skip_clone), as the tier: no deep copy inside vLLM.
        params = SamplingParams(
            temperature=0.0, max_tokens=MAX_TOKENS, output_kind=RequestOutputKind.FINAL_ONLY, skip_clone=True
        )
        text = tokenizer.apply_chat_template(prompts[i % len(prompts)], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        request_id = f"bare-{i}-{time.monotonic_ns()}"
        outputs = [output async for output in llm.generate(tokens_input(ids), params, request_id)]
        return len(outputs[-1].outputs[0].token_ids)

    try:
        return await _measure(one, CONCURRENCY)
    finally:
        llm.shutdown()
        gc.unfreeze()


async def _through_grpc(address: str, prompts: list[Any], cpu: CpuClock | None = None) -> Load:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def one(i: int) -> int:
            request = inference_pb2.GenerateRequest(
                user_id=f"bench-{i}", sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
            )
            for message in prompts[i % len(prompts)]:
                request.prompt.chat.messages.add(**message)
            reply = await stub.Generate(request, timeout=300)
            return reply.candidates[0].completion_tokens

        return await _measure(one, CONCURRENCY, cpu)


async def _through_grpc_elsewhere(address: str, prompts: list[Any]) -> Load:
    """`_through_grpc` from a client process of its own (`python -m bench.serving ADDRESS`, the prompts on
    its stdin), which counts the CPU of this process and its children but itself."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.serving", address, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await client.communicate(json.dumps(prompts).encode())
    if client.returncode != 0:
        raise RuntimeError(f"the bench's gRPC client exited with {client.returncode} (its error is above)")
    return Load(**json.loads(out.splitlines()[-1]))


def _client_main(address: str) -> None:
    """The client side of `_through_grpc_elsewhere`: its Load as JSON, the last line of stdout."""
    server = psutil.Process(os.getppid())
    prompts = json.load(sys.stdin)
    load = asyncio.run(_through_grpc(address, prompts, cpu=lambda: _cpu_s(server, skip={os.getpid()})))
    print(json.dumps(dataclasses.asdict(load)), flush=True)


async def _first_token_from(address: str, version: str, since: float) -> float:
    """Seconds from `since` until a response served by `version` arrives (polled with 1-token requests)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        while True:
            request = inference_pb2.GenerateRequest(
                user_id="swap-probe", sampling=common_pb2.SamplingParams(max_tokens=1)
            )
            request.prompt.chat.messages.add(role="user", content="Hello!")
            reply = await stub.Generate(request, timeout=60)
            if reply.candidates[0].model_version == version:
                return time.perf_counter() - since


async def _restart_to_first_token(model_path: Path, config: TrimtabConfig) -> float:
    """The alternative to a hot swap: start a fresh engine on the new weights and wait for a first token."""
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import tokens_input
    from vllm.v1.engine.async_llm import AsyncLLM

    started = time.perf_counter()
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(model_path, config.engine)))
    try:
        async for _ in llm.generate(tokens_input([1, 2, 3]), SamplingParams(max_tokens=1), "restart"):
            return time.perf_counter() - started
    finally:
        llm.shutdown()
    raise RuntimeError("the restarted engine produced no token")


async def _serving_benchmarks(config: TrimtabConfig, workdir: Path) -> list[Comparison]:
    from serving.server import start_server

    prompts = [p.messages for p in World(config.world).sample_prompts(CONCURRENCY, seed=5, split=Split.HELDOUT)]
    cores_left = sorted({0, config.serving.cpu_cores_for_server})
    bares = [await _bare_engine(config.model.path, config, prompts, cores) for cores in cores_left]
    bare_cores, bare = max(zip(cores_left, bares, strict=True), key=lambda pair: pair[1].tokens_per_s)
    same_threads = bares[cores_left.index(config.serving.cpu_cores_for_server)]

    running = await start_server(config)
    freeze_startup_heap()  # as `trimtab serve` does once it serves
    address = f"{config.serving.host}:{running.port}"
    try:
        tier = await _through_grpc_elsewhere(address, prompts)
        registry = Registry(config.registry.root)
        current = running.manager.router.current.version
        variant = perturbed_copy(registry.path(current), workdir / "variant", seed=9)
        published = time.perf_counter()
        version = registry.publish(variant, parent=current, algorithm="bench").id
        client = redis_client(config.redis)
        background = asyncio.create_task(_through_grpc(address, prompts))  # the swap happens under load
        await PointerStore(client, config.redis.key_prefix, config.registry.channel).promote(version)
        to_first_token = await _first_token_from(address, version, published)
        await background
        await client.aclose()
        stall = running.manager.history[-1].stall_s
    finally:
        await running.stop()
    restart = await _restart_to_first_token(registry.path(version), config)
    return [
        Comparison(
            f"serving throughput, {CONCURRENCY} concurrent greedy requests",
            "tokens/s",
            "trimtab gRPC tier",
            tier.tokens_per_s,
            "bare AsyncLLM",
            bare.tokens_per_s,
            notes=(
                f"p50/p99 latency: tier {tier.percentile(50):.2f}/{tier.percentile(99):.2f}s, "
                f"bare {bare.percentile(50):.2f}/{bare.percentile(99):.2f}s; engine.lora {config.engine.lora}; "
                f"the tier leaves {config.serving.cpu_cores_for_server} core(s) to gRPC; the bare engine, best of "
                + ", ".join(f"{c} core(s) left: {b.tokens_per_s:.0f}" for c, b in zip(cores_left, bares, strict=True))
                + f" tokens/s, counts with {bare_cores} left"
            ),
        ),
        Comparison(
            f"serving throughput, {CONCURRENCY} concurrent greedy requests, engine threads as the tier's",
            "tokens/s",
            "trimtab gRPC tier",
            tier.tokens_per_s,
            "bare AsyncLLM",
            same_threads.tokens_per_s,
            notes=(
                f"both engines leave {config.serving.cpu_cores_for_server} core(s) out of their threads: what the"
                " tier itself costs, apart from the core it keeps for gRPC"
            ),
        ),
        Comparison(
            f"serving CPU per 1,000 tokens, {CONCURRENCY} concurrent greedy requests",
            "CPU-s",
            "trimtab gRPC tier",
            tier.cpu_s_per_1k_tokens,
            "bare AsyncLLM",
            bare.cpu_s_per_1k_tokens,
            higher_is_better=False,
            notes=(
                f"this process and its children (the bench's client aside), user + system, over the measured"
                f" rounds; the bare engine at"
                f" {bare_cores} core(s) left; engine threads as the tier's: {same_threads.cpu_s_per_1k_tokens:.2f}"
            ),
        ),
        Comparison(
            f"serving process CPU per 1,000 tokens (engine core excluded), {CONCURRENCY} concurrent greedy requests",
            "CPU-s",
            "trimtab gRPC tier",
            tier.process_cpu_s_per_1k_tokens,
            "bare AsyncLLM",
            same_threads.process_cpu_s_per_1k_tokens,
            higher_is_better=False,
            notes=(
                "this process alone, engine threads as the tier's: the bare side is vLLM's front end (tokenising,"
                " detokenising, output handling); the tier adds its gRPC server, validation, the sampled tokens'"
                " logprobs and the response log (the bench's client runs in a process of its own)"
            ),
        ),
        Comparison(
            "new version: publish to first token",
            "s",
            "hot swap (pause/reload/resume)",
            to_first_token,
            "restart the engine",
            restart,
            higher_is_better=False,
            notes=f"swap stall {stall * 1000:.0f} ms under {CONCURRENCY} concurrent requests",
        ),
    ]


def bench_serving(config: TrimtabConfig) -> list[Comparison]:
    """Runs on a private stack (free ports, a temporary registry), like the tests."""
    from trimtab.app.stack import down, up

    with tempfile.TemporaryDirectory(prefix="trimtab-bench-") as tmp:
        workdir = Path(tmp)
        bench_config = private_stack(config, workdir)
        up(bench_config)
        try:
            return asyncio.run(_serving_benchmarks(bench_config, workdir))
        finally:
            purge_prefix(bench_config.redis.url, bench_config.redis.key_prefix)
            down(bench_config)


def private_stack(config: TrimtabConfig, workdir: Path) -> TrimtabConfig:
    """`config` on a stack of its own, as the tests run: a broker on a free port, a fresh Redis key prefix,
    a registry and run directory in `workdir`, serving (gRPC and the OpenAI API) on any free ports."""
    return config.model_copy(
        update={
            "stack": config.stack.model_copy(update={"run_dir": workdir / "run"}),
            "kafka": config.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"}),
            "redis": config.redis.model_copy(update={"key_prefix": f"trimtab-bench-{time.time_ns()}:"}),
            "registry": config.registry.model_copy(update={"root": workdir / "registry"}),
            "serving": config.serving.model_copy(
                update={"port": 0, "openai": config.serving.openai.model_copy(update={"port": 0})}
            ),
        }
    )


if __name__ == "__main__":
    _client_main(sys.argv[1])
