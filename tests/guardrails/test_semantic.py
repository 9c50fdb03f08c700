"""The embedder from the event loop: concurrent checks' texts are encoded together, each text once, with
the same vectors as a direct encode; a cancelled or failing caller does not strand the others; the
encoder's own process, killed, is started again."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from guardrails.semantic import Embedder, EmbeddingError


@pytest.fixture
def batches(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Every list of texts the embedding model is called with, while the test runs."""
    calls: list[list[str]] = []
    encode = embedder._model.encode

    def recorded(texts: list[str], **kwargs: Any) -> Any:
        calls.append(list(texts))
        return encode(texts, **kwargs)

    monkeypatch.setattr(embedder._model, "encode", recorded)
    yield calls


def fresh(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"Sentence {i} of check {tag}." for i in range(n)]


def test_concurrent_checks_share_a_batch_and_each_text_is_encoded_once(
    embedder: Embedder, batches: list[list[str]]
) -> None:
    checks = [fresh(3) for _ in range(8)]
    shared = fresh(1)[0]
    checks = [[*texts, shared] for texts in checks]  # one sentence every check asks for

    async def run() -> list[np.ndarray]:
        return await asyncio.gather(*(embedder.embed(texts) for texts in checks))

    results = asyncio.run(run())
    # The first check finds the worker idle and goes alone; the other seven wait for its batch to end.
    assert [len(batch) for batch in batches] == [4, 21]  # the shared sentence went with the first
    encoded = [text for batch in batches for text in batch]
    assert sorted(encoded) == sorted({text for texts in checks for text in texts})
    for texts, vectors in zip(checks, results, strict=True):
        assert vectors.shape == (len(texts), embedder.dimension)
        np.testing.assert_allclose(vectors, embedder.encode(texts), atol=1e-6)
    assert len(batches) == 2  # the encode above found every text cached
    assert asyncio.run(embedder.embed([])).shape == (0, embedder.dimension)


def test_a_cancelled_caller_leaves_the_text_to_the_others(embedder: Embedder) -> None:
    text = fresh(1)

    async def run() -> np.ndarray:
        first = asyncio.create_task(embedder.embed(text))
        second = asyncio.create_task(embedder.embed(text))
        await asyncio.sleep(0)  # both wait on the same batch
        first.cancel()
        return await second

    np.testing.assert_allclose(asyncio.run(run()), embedder.encode(text), atol=1e-6)


def test_a_failing_batch_fails_its_callers_and_the_next_batch_runs(embedder: Embedder) -> None:
    def broken(texts: list[str], **kwargs: Any) -> Any:
        raise RuntimeError("embedding model failed")

    async def failing() -> list[Any]:
        return await asyncio.gather(embedder.embed(fresh(2)), embedder.embed(fresh(2)), return_exceptions=True)

    embedder._model.encode = broken
    try:
        results = asyncio.run(failing())
    finally:
        del embedder._model.encode  # the model's own method again
    for result in results:
        assert isinstance(result, EmbeddingError) and "embedding model failed" in str(result.__cause__)
    assert asyncio.run(embedder.embed(fresh(2))).shape == (2, embedder.dimension)


def test_an_encoder_process_that_dies_fails_one_batch_and_the_next_starts_another(embedder: Embedder) -> None:
    before = embedder._model._process
    assert before is not None and before.poll() is None
    os.kill(before.pid, signal.SIGKILL)
    before.wait(timeout=10)
    with pytest.raises(EmbeddingError) as failed:
        asyncio.run(embedder.embed(fresh(2)))
    assert "the encoder process exited" in str(failed.value.__cause__)
    texts = fresh(3)
    vectors = asyncio.run(embedder.embed(texts))
    after = embedder._model._process
    assert after is not None and after.pid != before.pid and after.poll() is None
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
