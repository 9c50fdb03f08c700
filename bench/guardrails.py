"""Guardrails benchmarks: the serving tier with rails on vs off, and what each rail adds to a check.

Serving: one `trimtab serve` in this process with the rails on for one tenant only, so the same
engine, model, prompts and load (64 concurrent greedy requests) run with the rails (tenant "guarded")
and without them (tenant "open"), one after the other, unary and streamed. Twice: with the same 64
held-out prompts every round (after the first, every prompt's input verdict is remembered and every
answer's embeddings cached: what a check of the answers costs in the rails' runtime), and with a prompt
never sent before for every request (each prompt and answer checked and embedded: what new traffic
costs).

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
from bench.serving import CONCURRENCY, MAX_TOKENS, REQUESTS, Load, _measure, private_stack
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


async def _load(address: str, prompts: list[Any], tenant: str, stream: bool, fresh: bool) -> Load:
    """`fresh`: each request the next prompt of `prompts` (as many as the measurement sends); else the
    i-th request of every round `prompts[i]`."""
    sent = iter(prompts)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def one(i: int) -> int:
            request = inference_pb2.GenerateRequest(
                user_id=f"bench-{i}",
                tenant=tenant,
                sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS),
            )
            for message in next(sent) if fresh else prompts[i % len(prompts)]:
                request.prompt.chat.messages.add(**message)
            if not stream:
                return (await stub.Generate(request, timeout=300)).candidates[0].completion_tokens
            final = [c.final async for c in stub.GenerateStream(request, timeout=300) if c.HasField("final")]
            return final[0].completion_tokens

        return await _measure(one, CONCURRENCY)


async def _serving_rows(config: TrimtabConfig) -> list[Comparison]:
    from serving.server import start_server

    world = World(config.world)
    repeated = [p.messages for p in world.sample_prompts(CONCURRENCY, seed=5, split=Split.HELDOUT)]
    # Distinct prompts, as many as one measurement sends (the held-out split has too few).
    distinct = {p.text: p.messages for p in world.sample_prompts(4 * REQUESTS, seed=6, split=Split.TRAIN)}
    fresh = list(distinct.values())[:REQUESTS]
    assert len(fresh) == REQUESTS, f"{len(fresh)} distinct prompts, {REQUESTS} needed"
    running = await start_server(config)
    address = f"{config.serving.host}:{running.port}"
    rows = []
    try:
        for new, prompts in ((False, repeated), (True, fresh)):
            for stream in (False, True):
                off = await _load(address, prompts, OPEN, stream, new)
                on = await _load(address, prompts, GUARDED, stream, new)
                call = "GenerateStream (sliding window)" if stream else "Generate"
                which = "a new prompt each request" if new else "the same 64 prompts each round"
                notes = (
                    f"p50/p99 latency: rails {on.percentile(50):.2f}/{on.percentile(99):.2f}s, "
                    f"off {off.percentile(50):.2f}/{off.percentile(99):.2f}s; same server, engine and prompts"
                )
                rows.append(
                    Comparison(
                        f"{call} with guardrails, {CONCURRENCY} concurrent greedy requests, {which}",
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


# rails.co's per-rail flows, by stage, and the flows config.yml runs: the same rails as one flow per stage.
PER_RAIL_FLOWS = {
    "input": ("pii input", "jailbreak", "topics"),
    "output": ("secret", "blocklist", "toxicity", "pii output"),
}
STAGE_FLOWS = {"input": "trimtab input rails", "output": "trimtab output rails"}


def _per_rail_rows(config: TrimtabConfig, workdir: Path) -> list[Comparison]:
    """Median latency of a check with one rail, against the runtime with a pass-through action; and of a
    whole stage as one flow (config.yml's) against the same rails as one flow each."""
    from guardrails.decisions import Stage
    from guardrails.runtime import BUNDLED_CONFIG, Guardrails
    from guardrails.semantic import Embedder

    world = World(config.world)
    sample = world.sample_prompts(CHECKS_PER_RAIL, seed=8, split=Split.HELDOUT)
    inputs = [p.text for p in sample]
    rng = random.Random(8)
    outputs = [world.render(p, world.sample_style(rng), rng) for p in sample]
    embedder = Embedder()
    protected = world_suite(config).protected

    def load(name: str, stage: Stage, flows: tuple[str, ...]) -> Guardrails:
        return Guardrails.load(_only(workdir / name, BUNDLED_CONFIG, stage, flows), embedder, protected)

    baseline = _median_ms(load("pass", Stage.INPUT, ("pass through",)), Stage.INPUT, inputs)
    rows = []
    for stage in (Stage.INPUT, Stage.OUTPUT):
        texts = inputs if stage is Stage.INPUT else outputs
        notes = (
            f"median of {len(texts)} checks through LLMRails.check_async; each text is embedded once for all"
            " rows, by the first rail that embeds it (jailbreak, toxicity)"
        )
        for flow in PER_RAIL_FLOWS[stage.value]:
            rows.append(
                Comparison(
                    f"guardrail check latency: {stage.value} rail '{flow}'",
                    "ms",
                    "check with this rail",
                    _median_ms(load(flow.replace(" ", "-"), stage, (flow,)), stage, texts),
                    "runtime, pass-through action",
                    baseline,
                    higher_is_better=False,
                    notes=notes,
                )
            )
        rows.append(
            Comparison(
                f"guardrail check latency: every {stage.value} rail, one flow vs one flow per rail",
                "ms",
                f"'{STAGE_FLOWS[stage.value]}' (config.yml)",
                _median_ms(load(f"{stage.value}-stage", stage, (STAGE_FLOWS[stage.value],)), stage, texts),
                "the per-rail flows in turn",
                _median_ms(load(f"{stage.value}-each", stage, PER_RAIL_FLOWS[stage.value]), stage, texts),
                higher_is_better=False,
                notes=notes,
            )
        )
    embedder.close()
    return rows


def _only(target: Path, source: Path, stage: Any, flows: tuple[str, ...]) -> Path:
    """A copy of the config that runs these flows (and adds the pass-through flow for the baseline)."""
    shutil.copytree(source, target)
    data = yaml.safe_load((target / "config.yml").read_text())
    data["rails"] = {"input": {"flows": []}, "output": {"flows": []}}
    data["rails"][stage.value]["flows"] = list(flows)
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
