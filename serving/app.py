"""The Serve application builders (`import_path:` in cluster/serve-*.yaml).

`build_app` wires the Ingress to the models this config runs; `build_embedder_app` makes the Embedder the
ingress of its own application (routed at /v1/embeddings) when the config names `embeddings_app`.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serving.config import AppConfig, unloadable_reason
from serving.deployments.embedder import Embedder
from serving.deployments.generator import Generator
from serving.deployments.ingress import Ingress
from serving.deployments.translator import Translator


def build_app(args: dict[str, Any]) -> Application:
    """Validate the config's `args:` block (plus environment overrides) and wire the deployments."""
    config = AppConfig.model_validate(args).with_environment()
    embedder = None if config.embeddings_app else Embedder.bind(config.embedder, config.limits)
    absent = unloadable_reason(config.generator.model) if config.generator.deploy == "if_loadable" else None
    generator = None if absent else Generator.options(**config.generator.deployment).bind(config.generator)
    translator = (
        Translator.options(**config.translator.deployment).bind(
            config.translator, generator, config.limits.max_completion_tokens
        )
        if config.translator.deploy == "always" or config.translator.models
        else None
    )
    return Ingress.bind(config, embedder, generator, translator, absent)


def build_embedder_app(args: dict[str, Any]) -> Application:
    """The Embedder alone, answering `POST /v1/embeddings` itself (same `args:` as `build_app`)."""
    config = AppConfig.model_validate(args).with_environment()
    return Embedder.bind(config.embedder, config.limits)
