"""Ingress: the OpenAI-compatible HTTP API in front of the Embedder, Generator and Translator.

No `from __future__ import annotations` here: FastAPI must see real types on the wrapped methods.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serving.config import AppConfig
from serving.deployments.embedder import check_embedding_request, embeddings_body
from serving.deployments.translator import through_generator, translator_card
from serving.errors import (
    ModelUnavailable,
    Overloaded,
    ServingError,
    TooLarge,
    UnknownLanguage,
    describe_error,
    unwrap,
)
from serving.generation import Delta, GenerationRequest
from serving.languages import LANGUAGES
from serving.metrics import serving_metrics
from serving.schemas import ChatCompletionRequest, EmbeddingRequest, TranslationRequest
from serving.wire import check_model, check_texts, error_body, error_response

api = FastAPI(title="ShikshaSetu ML tier", docs_url=None, redoc_url=None)


@api.exception_handler(ServingError)
async def _serving_error(request: Request, exc: Exception) -> Response:
    error = unwrap(exc)
    assert isinstance(error, ServingError)
    serving_metrics().errors.inc(tags={"deployment": "Ingress", "kind": error.kind})
    return error_response(error.status_code, error.code, error.message)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for problem in exc.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        parts.append(f"{where or 'body'}: {problem.get('msg')}")
    serving_metrics().errors.inc(tags={"deployment": "Ingress", "kind": "invalid_input"})
    return error_response(422, "invalid_request", "; ".join(parts))


@contextmanager
def _capacity() -> Iterator[None]:
    """A handle call refused because the deployment's queue is full becomes our JSON 503 (Ray would answer
    plain text)."""
    try:
        yield
    except BackPressureError as error:
        raise Overloaded(f"the ML tier is at capacity, retry shortly ({error.message})") from None


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    """Handles left out (None) are deployments this config does not run: the Embedder of a separate
    embeddings application (`embeddings_app`), a Generator with no model to load here, a Translator with no
    seq2seq model (translation then goes to the Generator from here)."""

    def __init__(
        self,
        config: AppConfig,
        embedder: DeploymentHandle | None,
        generator: DeploymentHandle | None,
        translator: DeploymentHandle | None,
        generator_absent: str | None = None,
    ) -> None:
        self.config = config
        self.limits = config.limits
        if embedder is None:
            assert config.embeddings_app is not None
            embedder = serve.get_deployment_handle("Embedder", app_name=config.embeddings_app)
        self.embedder = embedder
        self.generator = generator
        self.translator = translator
        self.generator_absent = generator_absent or "no generator deployed"

    async def _embedder_card(self) -> dict[str, Any]:
        try:
            card: dict[str, Any] = await self.embedder.describe.remote()
        except Exception as error:  # the embeddings application is down or still starting
            return {
                "id": self.config.embedder.served_name,
                "kind": "embedding",
                "status": "unavailable",
                "reason": describe_error(unwrap(error)),
            }
        return card

    def _absent_generator_card(self) -> dict[str, Any]:
        return {
            "id": self.config.generator.name,
            "kind": "generation",
            "engine": self.config.generator.engine,
            "status": "unavailable",
            "json_schema": "validated with retries",
            "reason": self.generator_absent,
        }

    def _generator(self) -> DeploymentHandle:
        if self.generator is None:
            serving_metrics().errors.inc(tags={"deployment": "Ingress", "kind": "model_unavailable"})
            raise ModelUnavailable(self.generator_absent)
        return self.generator

    @api.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        cards = [
            await self._embedder_card(),
            await self.generator.describe.remote()
            if self.generator is not None
            else self._absent_generator_card(),
            await self.translator.describe.remote()
            if self.translator is not None
            else translator_card(self.config.translator, {}),
        ]
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"object": "model", "created": created, "owned_by": "shikshasetu", **card} for card in cards
            ],
        }

    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        """Every model's status; `degraded` when one of them is unavailable (the reason is in `models`)."""
        models = (await self.list_models())["data"]
        degraded = any(card["status"] != "available" for card in models)
        return {
            "status": "degraded" if degraded else "ok",
            "models": {card["kind"]: {k: v for k, v in card.items() if k != "languages"} for card in models},
        }

    @api.post("/v1/embeddings")
    async def create_embeddings(self, body: EmbeddingRequest) -> dict[str, Any]:
        """Reached when the Embedder is not its own application (which then answers this path itself)."""
        texts = check_embedding_request(body, self.config.embedder.served_name, self.limits)
        with _capacity():
            result = await self.embedder.embed.remote(texts)
        return embeddings_body(result, body, self.config.embedder.served_name)

    @api.post("/v1/chat/completions", response_model=None)
    async def create_chat_completion(self, body: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        check_model(body.model, self.config.generator.name)
        if len(body.messages) > self.limits.max_chat_messages:
            raise TooLarge(
                f"{len(body.messages)} messages; at most {self.limits.max_chat_messages} are allowed"
            )
        chars = sum(len(message.content) for message in body.messages)
        if chars > self.limits.max_chat_chars:
            raise TooLarge(
                f"the messages have {chars} characters; at most {self.limits.max_chat_chars} are allowed"
            )
        max_tokens = body.max_completion_tokens or body.max_tokens or 512
        if max_tokens > self.limits.max_completion_tokens:
            raise TooLarge(
                f"max_tokens={max_tokens}; at most {self.limits.max_completion_tokens} are allowed"
            )
        request = GenerationRequest(
            messages=[message.as_dict() for message in body.messages],
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop_sequences,
            json_schema=body.json_schema,
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return await self._stream_chat(completion_id, request, include_usage)
        with _capacity():
            completion = await self._generator().complete.remote(request)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.config.generator.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "finish_reason": completion.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            },
        }

    async def _stream_chat(
        self, completion_id: str, request: GenerationRequest, include_usage: bool
    ) -> StreamingResponse:
        deltas: AsyncIterator[Delta] = self._generator().options(stream=True).stream.remote(request)
        # Wait for the first piece before answering 200, so "model unavailable" and overload stay HTTP errors.
        with _capacity():
            first: Delta | None = await anext(deltas, None)
        model = self.config.generator.name
        created = int(time.time())

        def chunk(delta: dict[str, str], finish_reason: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                }
            )

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""}, None)
            piece = first
            try:
                while piece is not None:
                    if piece.text or piece.finish_reason:
                        yield chunk({"content": piece.text} if piece.text else {}, piece.finish_reason)
                    if piece.finish_reason is not None and include_usage:
                        usage = {
                            "prompt_tokens": piece.prompt_tokens,
                            "completion_tokens": piece.completion_tokens,
                            "total_tokens": piece.prompt_tokens + piece.completion_tokens,
                        }
                        yield _sse(
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": usage,
                            }
                        )
                    piece = await anext(deltas, None)
            except Exception as exc:  # the stream already said 200: report the failure in-band
                error = unwrap(exc)
                status, code = (
                    (error.status_code, error.code) if isinstance(error, ServingError) else (500, "internal")
                )
                yield _sse(error_body(status, code, describe_error(error)))
            yield _sse("[DONE]")

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @api.post("/v1/translations")
    async def create_translations(self, body: TranslationRequest) -> dict[str, Any]:
        check_model(body.model, self.config.translator.served_name)
        for field, code in (("source", body.source), ("target", body.target)):
            if code not in LANGUAGES:
                raise UnknownLanguage(
                    f"{field}={code!r} is not a supported language code; use one of {', '.join(LANGUAGES)}"
                )
        check_texts(body.texts, self.limits.max_translation_texts, self.limits.max_translation_chars, "texts")
        with _capacity():
            if self.translator is not None:
                translations = await self.translator.translate.remote(body.texts, body.source, body.target)
            elif body.source == body.target:
                translations = list(body.texts)
            else:
                generator = self._generator()
                translations = list(
                    await asyncio.gather(
                        *(
                            through_generator(
                                generator, text, body.source, body.target, self.limits.max_completion_tokens
                            )
                            for text in body.texts
                        )
                    )
                )
        return {
            "object": "translation.list",
            "model": self.config.translator.served_name,
            "source": body.source,
            "target": body.target,
            "translations": translations,
        }
