"""Ingress: the OpenAI-compatible HTTP API in front of the Embedder, Generator and Translator.

No `from __future__ import annotations` here: FastAPI must see real types on the wrapped methods.
"""

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serving.config import AppConfig
from serving.errors import (
    InvalidRequest,
    ModelNotFound,
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

RETRY_AFTER_SECONDS = 5

api = FastAPI(title="ShikshaSetu ML tier", docs_url=None, redoc_url=None)


def _error_body(status: int, code: str, message: str) -> dict[str, Any]:
    kind = (
        "invalid_request_error"
        if status < 500
        else "service_unavailable_error"
        if status == 503
        else "server_error"
    )
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


@api.exception_handler(ServingError)
async def _serving_error(request: Request, exc: Exception) -> JSONResponse:
    error = unwrap(exc)
    assert isinstance(error, ServingError)
    serving_metrics().errors.inc(tags={"deployment": "Ingress", "kind": error.kind})
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.status_code == 503 else None
    return JSONResponse(_error_body(error.status_code, error.code, error.message), error.status_code, headers)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for problem in exc.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        parts.append(f"{where or 'body'}: {problem.get('msg')}")
    serving_metrics().errors.inc(tags={"deployment": "Ingress", "kind": "invalid_input"})
    return JSONResponse(_error_body(422, "invalid_request", "; ".join(parts)), 422)


@contextmanager
def _capacity() -> Iterator[None]:
    """A handle call refused because the deployment's queue is full becomes our JSON 503 (Ray would answer
    plain text)."""
    try:
        yield
    except BackPressureError as error:
        raise Overloaded(f"the ML tier is at capacity, retry shortly ({error.message})") from None


def _check_model(asked: str | None, served: str) -> None:
    if asked is not None and asked != served:
        raise ModelNotFound(f"model {asked!r} is not served here; this endpoint serves {served!r}")


def _check_texts(texts: list[str], max_count: int, max_chars: int, what: str) -> None:
    if len(texts) > max_count:
        raise TooLarge(f"{len(texts)} {what} in one request; at most {max_count} are allowed")
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            raise TooLarge(f"{what}[{index}] has {len(text)} characters; at most {max_chars} are allowed")
        if not text.strip():
            raise InvalidRequest(f"{what}[{index}] is empty")


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        config: AppConfig,
        embedder: DeploymentHandle,
        generator: DeploymentHandle,
        translator: DeploymentHandle,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.embedder = embedder
        self.generator = generator
        self.translator = translator

    @api.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        cards = [
            await self.embedder.describe.remote(),
            await self.generator.describe.remote(),
            await self.translator.describe.remote(),
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
        _check_model(body.model, self.config.embedder.served_name)
        texts = body.texts
        if not texts:
            raise InvalidRequest("input is empty")
        _check_texts(texts, self.limits.max_embedding_inputs, self.limits.max_embedding_chars, "input")
        with _capacity():
            result = await self.embedder.embed.remote(texts)
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
            "model": self.config.embedder.served_name,
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(encoded)],
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }

    @api.post("/v1/chat/completions", response_model=None)
    async def create_chat_completion(self, body: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        _check_model(body.model, self.config.generator.name)
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
            completion = await self.generator.complete.remote(request)
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
        deltas: AsyncIterator[Delta] = self.generator.options(stream=True).stream.remote(request)
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
                yield _sse(_error_body(status, code, describe_error(error)))
            yield _sse("[DONE]")

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @api.post("/v1/translations")
    async def create_translations(self, body: TranslationRequest) -> dict[str, Any]:
        _check_model(body.model, self.config.translator.served_name)
        for field, code in (("source", body.source), ("target", body.target)):
            if code not in LANGUAGES:
                raise UnknownLanguage(
                    f"{field}={code!r} is not a supported language code; use one of {', '.join(LANGUAGES)}"
                )
        _check_texts(
            body.texts, self.limits.max_translation_texts, self.limits.max_translation_chars, "texts"
        )
        with _capacity():
            translations = await self.translator.translate.remote(body.texts, body.source, body.target)
        return {
            "object": "translation.list",
            "model": self.config.translator.served_name,
            "source": body.source,
            "target": body.target,
            "translations": translations,
        }
