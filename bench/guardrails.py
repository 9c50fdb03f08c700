"""Guardrails benchmarks: the serving tier with rails on vs off, and what each rail adds to a check.

Serving: one `trimtab serve` in this process with the rails on for one tenant only, so the same
engine, model, prompts and load (64 concurrent greedy requests over held-out prompts) run with the
rails (tenant "guarded") and without them (tenant "open"), one after the other, unary and streamed.

Per rail: a check through NeMo Guardrails' `check_async` with only that rail's flow configured, vs
the same runtime running a pass-through action: what the rail itself costs on top of the runtime.

Run alone with `python -m bench.guardrails` (`make bench` runs it with the others).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from bench.report import Comparison
from bench.serving import CONCURRENCY, MAX_TOKENS, Load, _measure, private_stack
from bench.simulation import simulation_config
from trimtab.config import TrimtabConfig
from trimtab.records import purge_prefix
from trimtab.simulation.suite import world_suite
from trimtab.simulation.world import Split, World
from trimtab.v1 import common_pb2, inference_pb2, inference_pb2_grpc

GUARDED, OPEN = "guarded", "open"
CHECKS_PER_RAIL = 60
# The baseline: NeMo's runtime running a flow that decides nothing.
PASS_THROUGH_CO = """
define subflow pass through
  $decision = "allow"
"""


async def _load(address: str, prompts: list[Any], tenant: str, stream: bool) -> Load:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def one(i: int) -> int:
            request = inference_pb2.GenerateRequest(
                user_id=f"bench-{i}",
                tenant=tenant,
                sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS),
            )
            for message in prompts[i % len(prompts)]:
                request.prompt.chat.messages.add(**message)
            if not stream:
                return (await stub.Generate(request, timeout=300)).candidates[0].completion_tokens
            final = [c.final async for c in stub.GenerateStream(request, timeout=300) if c.HasField("final")]
            return final[0].completion_tokens

        return await _measure(one, CONCURRENCY)


async def _serving_rows(config: TrimtabConfig) -> list[Comparison]:
    from serving.server import start_server

    prompts = [p.messages for p in World(config.world).sample_prompts(CONCURRENCY, seed=5, split=Split.HELDOUT)]
    running = await start_server(config)
    address = f"{config.serving.host}:{running.port}"
    rows = []
    try:
        for stream in (False, True):
            off = await _load(address, prompts, OPEN, stream)
            on = await _load(address, prompts, GUARDED, stream)
            call = "GenerateStream (sliding window)" if stream else "Generate"
            notes = (
                f"p50/p99 latency: rails {on.percentile(50):.2f}/{on.percentile(99):.2f}s, "
                f"off {off.percentile(50):.2f}/{off.percentile(99):.2f}s; same server, engine and prompts"
            )
            rows.append(
                Comparison(
                    f"{call} with guardrails, {CONCURRENCY} concurrent greedy requests",
                    "tokens/s",
                    "rails on (input + output)",
                    on.tokens_per_s,
                    "rails off",
                    off.tokens_per_s,
                    notes=notes,
                )
            )
    finally:
        await running.stop()
    return rows


def _per_rail_rows(config: TrimtabConfig, workdir: Path) -> list[Comparison]:
    """Median latency of a check with one rail, against the runtime with a pass-through action."""
    from guardrails.decisions import Stage
    from guardrails.runtime import BUNDLED_CONFIG, Guardrails
    from guardrails.semantic import Embedder

    world = World(config.world)
    sample = world.sample_prompts(CHECKS_PER_RAIL, seed=8, split=Split.HELDOUT)
    inputs = [p.text for p in sample]
    rng = random.Random(8)
    outputs = [world.render(p, world.sample_style(rng), rng) for p in sample]
    embedder = Embedder()
    bundled = yaml.safe_load((BUNDLED_CONFIG / "config.yml").read_text())
    flows = [(Stage.INPUT, flow) for flow in bundled["rails"]["input"]["flows"]]
    flows += [(Stage.OUTPUT, flow) for flow in bundled["rails"]["output"]["flows"]]
    protected = world_suite(config).protected
    passing = Guardrails.load(_only(workdir / "pass", BUNDLED_CONFIG, Stage.INPUT, "pass through"), embedder, protected)
    baseline = _median_ms(passing, Stage.INPUT, inputs)
    rows = []
    for stage, flow in flows:
        rails = Guardrails.load(
            _only(workdir / flow.replace(" ", "-"), BUNDLED_CONFIG, stage, flow), embedder, protected
        )
        texts = inputs if stage is Stage.INPUT else outputs
        rows.append(
            Comparison(
                f"guardrail check latency: {stage.value} rail '{flow}'",
                "ms",
                "check with this rail",
                _median_ms(rails, stage, texts),
                "runtime, pass-through action",
                baseline,
                higher_is_better=False,
                notes=f"median of {len(texts)} checks through LLMRails.check_async, embeddings cached after first use",
            )
        )
    embedder.close()
    return rows


def _only(target: Path, source: Path, stage: Any, flow: str) -> Path:
    """A copy of the config that runs one flow (and adds the pass-through flow for the baseline)."""
    shutil.copytree(source, target)
    data = yaml.safe_load((target / "config.yml").read_text())
    data["rails"] = {"input": {"flows": []}, "output": {"flows": []}}
    data["rails"][stage.value]["flows"] = [flow]
    (target / "config.yml").write_text(yaml.safe_dump(data))
    (target / "pass.co").write_text(PASS_THROUGH_CO)
    return target


def _median_ms(rails: Any, stage: Any, texts: list[str]) -> float:
    async def run() -> list[float]:
        for text in texts[:5]:  # warm-up: first calls build caches
            await rails.check(stage, text, "What is 3 plus 5?")
        times = []
        for text in texts:
            started = time.perf_counter()
            await rails.check(stage, text, "What is 3 plus 5?")
            times.append((time.perf_counter() - started) * 1000)
        return times

    return statistics.median(asyncio.run(run()))


def bench_guardrails(config: TrimtabConfig) -> list[Comparison]:
    """Runs on a private stack (free ports, a temporary registry), like the serving benchmark."""
    from trimtab.app.stack import down, up

    with tempfile.TemporaryDirectory(prefix="trimtab-bench-rails-") as tmp:
        workdir = Path(tmp)
        rows = _per_rail_rows(config, workdir)
        guarded = config.guardrails.model_copy(update={"enabled": True, "tenants": (GUARDED,)})
        bench_config = private_stack(config.model_copy(update={"guardrails": guarded}), workdir)
        up(bench_config)
        try:
            return rows + asyncio.run(_serving_rows(bench_config))
        finally:
            purge_prefix(bench_config.redis.url, bench_config.redis.key_prefix)
            down(bench_config)


def main() -> int:
    """`python -m bench.guardrails`: this benchmark alone, written to bench/results/guardrails/."""

    from bench.report import write_report
    from trimtab.environment import apply_runtime_env

    apply_runtime_env()  # what `make bench` exports: vLLM's KV cache size and thread placement
    table = write_report(
        bench_guardrails(simulation_config()), Path(__file__).resolve().parent / "results" / "guardrails"
    )
    print(table.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
