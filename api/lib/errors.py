"""One exception hierarchy for the service, mapped once to RFC 9457 problem details."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY, HTTP_500_INTERNAL_SERVER_ERROR

log = structlog.get_logger("api.errors")

PROBLEM_JSON = "application/problem+json"


class ProblemDetails(msgspec.Struct, kw_only=True):
    """An error answer (RFC 9457 problem details), sent as `application/problem+json`."""

    type: str = "about:blank"
    title: str
    """Short, fixed for the status: "Not found", "Invalid input", "Too many requests"..."""
    status: int
    detail: str
    """What went wrong with this request, and what to do about it."""
    instance: str
    """The request path."""
    errors: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET
    """422 only: one entry per invalid field (`key`, `source`, `message`)."""
    error: str | msgspec.UnsetType = msgspec.UNSET
    """A machine-readable reason, where there is one (`invalid_token`, `insufficient_scope`...)."""


class DomainError(Exception):
    """Base of every error a service raises on purpose; carries its HTTP status and a clear detail."""

    status_code = 400
    title = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class NotFound(DomainError):
    status_code = 404
    title = "Not found"


class Conflict(DomainError):
    status_code = 409
    title = "Conflict"


class InvalidInput(DomainError):
    status_code = 422
    title = "Invalid input"


class PayloadTooLarge(DomainError):
    status_code = 413
    title = "Payload too large"


class Unauthorized(DomainError):
    status_code = 401
    title = "Unauthorized"


class PermissionDenied(DomainError):
    status_code = 403
    title = "Forbidden"


class TooManyRequests(DomainError):
    status_code = 429
    title = "Too many requests"


class UpstreamUnavailable(DomainError):
    status_code = 503
    title = "Service unavailable"


class UpstreamBadOutput(DomainError):
    """A model answered, but with output we cannot use (not the requested shape); retrying may help."""

    status_code = 502
    title = "Bad output from the model"


def problem(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    """Build an `application/problem+json` response (RFC 9457)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    return problem(request, exc.status_code, exc.title, exc.detail, exc.headers, **exc.extra)


def validation_error_handler(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    errors = exc.extra if isinstance(exc.extra, list) else []
    parts = [
        f"{e.get('key') or e.get('source', 'body')}: {e.get('message')}"
        for e in errors
        if isinstance(e, dict)
    ]
    detail = "; ".join(parts) or str(exc.detail)
    return problem(request, HTTP_422_UNPROCESSABLE_ENTITY, "Invalid input", detail, errors=errors)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    detail = exc.detail
    if status == 404 and detail in {"Not Found", ""}:
        detail = f"No route matches {request.method} {request.url.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    headers = dict(exc.headers or {})
    title = {401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}.get(
        status, "Error"
    )
    return problem(request, status, title, detail, headers)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return problem(
        request,
        HTTP_500_INTERNAL_SERVER_ERROR,
        "Internal server error",
        "The server hit an unexpected error and logged it. "
        "Quote the X-Request-ID response header when reporting it.",
    )


exception_handlers: dict[type[Exception], Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
