"""Embedder: a sentence encoder behind `@serve.batch`; returns normalised vectors.

Called two ways: through a handle (`embed`, from the Ingress or a driver), and straight over HTTP
(`__call__`) when it is the ingress of its own application at `/v1/embeddings` (cluster/serve-local.yaml),
which saves the hop through the generic Ingress.

Batching (serving/batching.py): one model call at a time (the encoder uses the replica's one thread), and
the next batch is formed when the model is free, from every text that queued meanwhile: a lone request
pays nothing and concurrent ones share model calls.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from numpy.typing import NDArray
from pydantic import ValidationError
from ray import serve

from serving.batching import ContinuousBatcher
from serving.config import EmbedderConfig, Limits
from serving.encoders import Encoder, load_encoder, load_sentence_transformer
from serving.errors import InvalidRequest, ServingError, describe_error
from serving.metrics import serving_metrics
from serving.schemas import EmbeddingRequest
from serving.wire import check_model, check_texts, error_response, json_response, validation_message

__all__ = ["Embedder", "Embeddings", "encode", "load_sentence_transformer"]

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_BATCH_WAIT_S = 0.0


def encode(model: Any, texts: list[str]) -> NDArray[np.float32]:
    """sentence-transformers' own call (the reference the backends are compared with)."""
    vectors: NDArray[np.float32] = model.encode(
        texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True
    )
    return vectors.astype(np.float32, copy=False)


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: NDArray[np.float32]  # (inputs, dimensions), unit length
    tokens: int  # tokens the model read, truncation included


def embeddings_body(result: Embeddings, body: EmbeddingRequest, served_name: str) -> dict[str, Any]:
    """The OpenAI-style response body."""
    vectors = result.vectors
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise InvalidRequest(
            f"dimensions={body.dimensions} is not supported; the model gives {vectors.shape[1]}"
        )
    if body.encoding_format == "base64":
        encoded: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors]
    else:
        encoded = vectors.tolist()
    return {
        "object": "list",
        "model": served_name,
        "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(encoded)],
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }


def check_embedding_request(body: EmbeddingRequest, served_name: str, limits: Limits) -> list[str]:
    check_model(body.model, served_name)
    texts = body.texts
    if not texts:
        raise InvalidRequest("input is empty")
    check_texts(texts, limits.max_embedding_inputs, limits.max_embedding_chars, "input")
    return texts


@serve.deployment(name="Embedder", max_ongoing_requests=256)
class Embedder:
    """Each input is one batch item; concurrent requests share model calls up to `max_batch_size`."""

    def __init__(self, config: EmbedderConfig, limits: Limits | None = None) -> None:
        self.config = config
        self.limits = limits or Limits()
        self.metrics = serving_metrics()
        started = time.perf_counter()
        self.encoder: Encoder = load_encoder(config)
        self.dimensions = self.encoder.dimensions
        self.load_seconds = time.perf_counter() - started
        self.batch_sizes: Counter[int] = Counter()
        self._tags = {"deployment": "Embedder"}
        self.batcher: ContinuousBatcher[str, tuple[NDArray[np.float32], int]] = ContinuousBatcher(
            self._encode_batch,
            max_batch_size=DEFAULT_MAX_BATCH_SIZE,
            wait_s=DEFAULT_BATCH_WAIT_S,
            on_batch=self._observe_batch,
        )
        self._report_model()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config` in the Serve config: batch size and wait, changed live without a restart."""
        self.batcher.max_batch_size = int(user_config.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE))
        self.batcher.wait_s = float(user_config.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_S))

    async def embed(self, texts: list[str]) -> Embeddings:
        if not texts:
            return Embeddings(np.zeros((0, self.dimensions), np.float32), 0)
        rows = await self.batcher.submit(texts)
        return Embeddings(np.stack([vector for vector, _ in rows]), sum(tokens for _, tokens in rows))

    async def __call__(self, request: Request) -> Response:
        """`POST /v1/embeddings` when this deployment is its application's ingress."""
        if request.method != "POST":
            return error_response(405, "method_not_allowed", "use POST /v1/embeddings")
        try:
            try:
                body = EmbeddingRequest.model_validate_json(await request.body())
            except ValidationError as error:
                return error_response(422, "invalid_request", validation_message(error))
            texts = check_embedding_request(body, self.config.served_name, self.limits)
            result = await self.embed(texts)
            return json_response(embeddings_body(result, body, self.config.served_name))
        except ServingError as error:
            self.metrics.errors.inc(tags={"deployment": "Embedder", "kind": error.kind})
            return error_response(error.status_code, error.code, error.message)
        except Exception as error:  # answer JSON, never a bare 500 page
            self.metrics.errors.inc(tags={"deployment": "Embedder", "kind": "internal"})
            return error_response(500, "internal", describe_error(error))

    async def _encode_batch(self, texts: list[str]) -> list[tuple[NDArray[np.float32], int]]:
        vectors, tokens = await asyncio.to_thread(self.encoder.encode, texts)
        return list(zip(list(vectors), tokens, strict=True))

    def _observe_batch(self, size: int, waits: list[float]) -> None:
        self.metrics.batch_size.observe(size, tags=self._tags)
        self.metrics.batch_queue_length.set(self.batcher.queued(), tags=self._tags)
        for wait in waits:
            self.metrics.queue_wait.observe(wait, tags=self._tags)
        self.batch_sizes[size] += 1

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.config.served_name,
            "kind": "embedding",
            "dimensions": self.dimensions,
            "status": "available",
            "source": self.config.model,
            "backend": self.encoder.description,
        }

    def batch_size_counts(self) -> dict[int, int]:
        """How many model calls ran at each batch size since the replica started."""
        return dict(self.batch_sizes)

    def check_health(self) -> None:
        """Serve calls this every `health_check_period_s`; the model is in memory once __init__ returned."""
        if self.encoder is None:
            raise RuntimeError("embedding model not loaded")
        self._report_model()

    def _report_model(self) -> None:
        # Re-set on every health check: a gauge set once, before Ray's metrics agent is ready, can be lost.
        tags = {"deployment": "Embedder", "model": self.config.served_name}
        self.metrics.model_load_seconds.set(self.load_seconds, tags=tags)
        self.metrics.model_available.set(1, tags=tags)


@serve.deployment(name="Noop", max_ongoing_requests=256)
class Noop:
    """The Embedder's interface without a model (a fixed vector): what Serve's transit alone costs."""

    def __init__(self, dimensions: int = 384, served_name: str = "noop") -> None:
        self.vector = np.zeros(dimensions, np.float32)
        self.vector[0] = 1.0
        self.served_name = served_name
        self.limits = Limits()

    async def embed(self, texts: list[str]) -> Embeddings:
        return Embeddings(np.stack([self.vector] * len(texts)), len(texts))

    async def __call__(self, request: Request) -> Response:
        try:
            body = EmbeddingRequest.model_validate_json(await request.body())
        except ValidationError as error:
            return error_response(422, "invalid_request", validation_message(error))
        body.model = None
        texts = check_embedding_request(body, self.served_name, self.limits)
        return json_response(embeddings_body(await self.embed(texts), body, self.served_name))
