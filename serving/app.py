"""The Serve application builder: `import_path: serving.app:build_app` in cluster/serve-*.yaml."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serving.config import AppConfig
from serving.deployments.embedder import Embedder
from serving.deployments.generator import Generator
from serving.deployments.ingress import Ingress
from serving.deployments.translator import Translator


def build_app(args: dict[str, Any]) -> Application:
    """Validate the config's `args:` block (plus environment overrides) and wire the four deployments."""
    config = AppConfig.model_validate(args).with_environment()
    embedder = Embedder.bind(config.embedder)
    generator = Generator.bind(config.generator)
    translator = Translator.bind(config.translator, generator, config.limits.max_completion_tokens)
    return Ingress.bind(config, embedder, generator, translator)
