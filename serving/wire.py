"""What every HTTP-facing deployment shares: request checks and OpenAI-style JSON bodies and errors."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response
from pydantic import ValidationError

from serving.errors import InvalidRequest, ModelNotFound, TooLarge

RETRY_AFTER_SECONDS = 5


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    kind = (
        "invalid_request_error"
        if status < 500
        else "service_unavailable_error"
        if status == 503
        else "server_error"
    )
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status, headers, media_type="application/json")


def error_response(status: int, code: str, message: str) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return json_response(error_body(status, code, message), status, headers)


def validation_message(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        parts.append(f"{where or 'body'}: {problem.get('msg')}")
    return "; ".join(parts)


def check_model(asked: str | None, served: str) -> None:
    if asked is not None and asked != served:
        raise ModelNotFound(f"model {asked!r} is not served here; this endpoint serves {served!r}")


def check_texts(texts: list[str], max_count: int, max_chars: int, what: str) -> None:
    if len(texts) > max_count:
        raise TooLarge(f"{len(texts)} {what} in one request; at most {max_count} are allowed")
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            raise TooLarge(f"{what}[{index}] has {len(text)} characters; at most {max_chars} are allowed")
        if not text.strip():
            raise InvalidRequest(f"{what}[{index}] is empty")
