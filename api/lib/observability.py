"""One ASGI middleware for every request: request id, Prometheus metrics by route template, access log."""

from __future__ import annotations

import os
import time
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

log = structlog.get_logger("api.access")

REQUESTS = Counter(
    "setu_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "setu_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 45),
)
IN_PROGRESS = Gauge(
    "setu_http_requests_in_progress",
    "HTTP requests being answered now.",
    ["method"],
    multiprocess_mode="livesum",
)

_REQUEST_ID_HEADER = b"x-request-id"
_MAX_REQUEST_ID = 128
UNMATCHED_ROUTE = "(unmatched)"


_CHILDREN: dict[tuple[object, ...], Any] = {}
_MAX_CHILDREN = 5_000


def _child(metric: Counter | Gauge | Histogram, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: the lookup and its lock are paid once per label set."""
    key = (metric, *labels)
    child = _CHILDREN.get(key)
    if child is None:
        if len(_CHILDREN) >= _MAX_CHILDREN:  # label values are bounded (route templates), but be safe
            _CHILDREN.clear()
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def request_id_for(scope: Scope) -> str:
    """The caller's `X-Request-ID` when it is usable, else a new one (32 hex digits)."""
    for name, value in scope.get("headers", ()):
        if name == _REQUEST_ID_HEADER:
            text = value.decode("latin-1").strip()
            if text and len(text) <= _MAX_REQUEST_ID and text.isprintable():
                return text
            break
    return os.urandom(16).hex()


def request_id_header(request_id: str) -> tuple[bytes, bytes]:
    return (_REQUEST_ID_HEADER, request_id.encode("latin-1"))


def in_progress(method: str) -> Any:
    """The in-progress gauge child for `method` (inc on arrival, dec when answered)."""
    return _child(IN_PROGRESS, method)


def observe(method: str, route: str, status: int, elapsed: float) -> None:
    """Count and time one answered request; log it at debug level, or always for a 5xx."""
    _child(REQUESTS, method, route, str(status)).inc()
    _child(LATENCY, method, route).observe(elapsed)
    if status >= 500 or log.isEnabledFor(10):
        log.info("request", method=method, route=route, status=status, ms=round(elapsed * 1000, 2))


def route_template(scope: Scope) -> str:
    """The matched route template (`/api/v1/memories/{memory_id}`), never the raw path."""
    template = scope.get("path_template")
    return template if isinstance(template, str) and template else UNMATCHED_ROUTE


class ObservabilityMiddleware:
    """Assigns the request id, measures the request and writes the access log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        method: str = scope["method"]  # type: ignore[typeddict-item]
        status = 500
        header = request_id_header(request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        gauge = in_progress(method)
        gauge.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            gauge.dec()
            observe(method, route_template(scope), status, time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")


def request_id_of(scope_state: dict[str, Any]) -> str | None:
    value = scope_state.get("request_id")
    return value if isinstance(value, str) else None


def render_metrics() -> bytes:
    """Prometheus text for this process, or for every worker when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
