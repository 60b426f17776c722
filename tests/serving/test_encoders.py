"""The Embedder's encoders in-process: torch pooled here equals sentence-transformers; ONNX Runtime fp32 and
int8 (exported here from the packaged model) stay within cosine 0.99 of torch on curriculum texts."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.curriculum.loader import embedding_text, read_seed
from serving.config import EmbedderConfig
from serving.deployments.embedder import encode
from serving.encoders import OnnxEncoder, TorchEncoder, load_sentence_transformer


@functools.cache
def model() -> Any:
    return load_sentence_transformer(EmbedderConfig(device="cpu"))


def sample_texts() -> list[str]:
    standards = read_seed().standards
    picked = standards[:: max(1, len(standards) // 40)]  # outcomes and chapters, short and long
    return [embedding_text(s.kind, s.text, s.keywords) for s in picked] + ["भारत एक विशाल देश है।", "fractions"]


def test_torch_encoder_equals_sentence_transformers_and_counts_tokens() -> None:
    texts = sample_texts()
    vectors, tokens = TorchEncoder(model()).encode(texts)
    reference = encode(model(), texts)
    assert vectors.shape == (len(texts), 384)
    assert float((vectors * reference).sum(1).min()) > 0.9999
    lengths = [len(ids) for ids in model().tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    assert tokens == lengths


@pytest.mark.parametrize(("backend", "floor"), [("onnx", 0.9999), ("onnx-int8", 0.99)])
def test_onnx_backends_match_torch(
    backend: str, floor: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SETU_ONNX_CACHE_DIR", str(tmp_path))
    texts = sample_texts()
    config = EmbedderConfig(device="cpu", backend=backend)  # type: ignore[arg-type]
    encoder = OnnxEncoder(model(), config, quantize=backend == "onnx-int8")
    vectors, tokens = encoder.encode(texts)
    reference, reference_tokens = TorchEncoder(model()).encode(texts)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert float((vectors * reference).sum(1).min()) >= floor
    assert tokens == reference_tokens
    # A second replica reuses the export.
    exported = sorted(path.name for path in tmp_path.iterdir())
    OnnxEncoder(model(), config, quantize=backend == "onnx-int8")
    assert sorted(path.name for path in tmp_path.iterdir()) == exported
