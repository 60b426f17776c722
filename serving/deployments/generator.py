"""Generator: chat completions from a vLLM or transformers engine.

When the model cannot load, the replica stays up, reports why, and answers 503 with the reason.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ray import serve

from serving.config import GeneratorConfig, torch_device
from serving.errors import InvalidModelOutput, ModelUnavailable, ServingError, describe_error
from serving.generation import (
    Completion,
    Delta,
    Engine,
    GenerationRequest,
    extract_json,
    schema_violation,
    with_schema_instruction,
)
from serving.metrics import serving_metrics

_RETRY_TEMPERATURE = 0.7  # a retry at temperature 0 would repeat the rejected answer


def load_engine(config: GeneratorConfig, on_batch: Any = None) -> Engine:
    device = torch_device(config.device)
    if config.engine == "vllm":
        from serving.engines.vllm_engine import VllmEngine

        return VllmEngine(config.model, served_name=config.name, options=config.engine_options)
    from serving.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        config.model,
        device=device,
        max_batch_size=config.max_batch_size,
        batch_wait_s=config.batch_wait_s,
        on_batch=on_batch,
    )


@serve.deployment(name="Generator")
class Generator:
    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.metrics = serving_metrics()
        self.model_tags = {"deployment": "Generator", "model": config.name}
        self.token_tags = {**self.model_tags, "engine": config.engine}
        self.engine: Engine | None = None
        self.unavailable_reason: str | None = None
        started = time.perf_counter()
        try:
            self.engine = load_engine(config, on_batch=self._observe_batch)
        except Exception as error:  # any load failure: keep serving, report it, answer 503 with the reason
            self.unavailable_reason = (
                f"{config.engine} engine could not load {config.model}: {describe_error(error)}"
            )
        self.load_seconds = time.perf_counter() - started
        self._report_model()

    def describe(self) -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": self.config.name,
            "kind": "generation",
            "engine": self.config.engine,
            "status": "available" if self.engine is not None else "unavailable",
            "json_schema": "constrained decoding"
            if self.engine is not None and self.engine.supports_json_schema
            else "validated with retries",
        }
        if self.unavailable_reason:
            card["reason"] = self.unavailable_reason
        return card

    async def complete(self, request: GenerationRequest) -> Completion:
        engine = self._engine()
        try:
            if request.json_schema is None:
                completion = await engine.complete(request)
                self._count(completion.prompt_tokens, completion.completion_tokens)
            elif engine.supports_json_schema:
                completion = await self._guided_json(engine, request)
            else:
                completion = await self._json_with_retries(engine, request)
        except ServingError as error:
            self.metrics.errors.inc(tags={"deployment": "Generator", "kind": error.kind})
            raise
        return completion

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        engine = self._engine()
        async for delta in engine.stream(request):
            if delta.finish_reason is not None:
                self._count(delta.prompt_tokens, delta.completion_tokens)
            yield delta

    async def check_health(self) -> None:
        if self.engine is not None:
            await self.engine.check_health()
        self._report_model()

    async def __del__(self) -> None:
        """Graceful shutdown: Serve calls this after draining the replica."""
        if self.engine is not None:
            await self.engine.shutdown()

    # -- internals ----------------------------------------------------------------------------------------

    def _report_model(self) -> None:
        # Re-set on every health check: a gauge set once, before Ray's metrics agent is ready, can be lost.
        self.metrics.model_load_seconds.set(self.load_seconds, tags=self.model_tags)
        self.metrics.model_available.set(0 if self.engine is None else 1, tags=self.model_tags)

    def _engine(self) -> Engine:
        if self.engine is None:
            self.metrics.errors.inc(tags={"deployment": "Generator", "kind": "model_unavailable"})
            raise ModelUnavailable(self.unavailable_reason or "generation model not loaded")
        return self.engine

    def _observe_batch(self, size: int, waits: list[float]) -> None:
        tags = {"deployment": "Generator"}
        self.metrics.batch_size.observe(size, tags=tags)
        for wait in waits:
            self.metrics.queue_wait.observe(wait, tags=tags)

    def _count(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.metrics.prompt_tokens.inc(prompt_tokens, tags=self.token_tags)
        if completion_tokens:
            self.metrics.tokens_generated.inc(completion_tokens, tags=self.token_tags)

    async def _guided_json(self, engine: Engine, request: GenerationRequest) -> Completion:
        assert request.json_schema is not None
        # Decoding is constrained to the schema; telling the model the schema too helps it fill it sensibly.
        completion = await engine.complete(with_schema_instruction(request, None))
        self._count(completion.prompt_tokens, completion.completion_tokens)
        problem = schema_violation(completion.text, request.json_schema)
        if problem is not None:  # constrained decoding stops short only when max_tokens cut it
            raise InvalidModelOutput(
                f"the output does not match json_schema ({problem}); finish_reason={completion.finish_reason}"
            )
        return completion

    async def _json_with_retries(self, engine: Engine, request: GenerationRequest) -> Completion:
        """No constrained decoding here: instruct, validate against the schema, retry with feedback."""
        assert request.json_schema is not None
        problem: str | None = None
        prompt_tokens = completion_tokens = 0
        for attempt in range(self.config.json_attempts):
            asked = with_schema_instruction(request, problem)
            if attempt:
                asked = replace(asked, temperature=max(asked.temperature, _RETRY_TEMPERATURE))
            completion = await engine.complete(asked)
            self._count(completion.prompt_tokens, completion.completion_tokens)
            prompt_tokens += completion.prompt_tokens
            completion_tokens += completion.completion_tokens
            candidate = extract_json(completion.text)
            problem = schema_violation(candidate, request.json_schema)
            if problem is None:
                return Completion(candidate, prompt_tokens, completion_tokens, completion.finish_reason)
        raise InvalidModelOutput(
            f"no output matching json_schema after {self.config.json_attempts} attempts; "
            f"last problem: {problem}"
        )
