"""One request through the engine before a replica says SERVING, so that no user waits for what a new
engine does once.

vLLM's sampler computes the sampled tokens' logprobs (serving asks for them on every request) with a
function torch compiles the first time it runs in a process: a new `trimtab serve`'s first request took
8.7 s on a cold inductor cache and 1.0 s on a warm one, the next 0.1 s (docs/measurements.md#serving).
The warm-up pays that before the health check turns SERVING; it goes to the engine directly, so it is
neither recorded, routed nor counted in serving's metrics (vLLM's own count it).
"""

from __future__ import annotations

import time

from serving.protocol import Engine, EngineRequest, Sampling

PROMPT = "Hello!"  # a text prompt: a model without a chat template serves text prompts too


async def warm_up(engine: Engine) -> float:
    """Generate a couple of greedy tokens, asking for their logprobs as a request does; the seconds it took."""
    started = time.perf_counter()
    request = EngineRequest(
        f"warm-up-{time.time_ns()}",
        engine.encode(PROMPT),
        Sampling(temperature=0.0, top_p=1.0, top_k=0, max_tokens=2),
        stream=False,
    )
    async for _ in engine.generate(request):
        pass
    return time.perf_counter() - started
