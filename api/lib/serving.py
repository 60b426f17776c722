"""The API's client for the ML tier (`SERVING_URL`): embeddings, chat, translation, model list.

Every call has a timeout; idempotent calls are retried a bounded number of times with jittered backoff; a
circuit breaker stops calling a serving tier that keeps failing and lets one probe through after a pause. When
serving is down, callers get `UpstreamUnavailable` (503 + Retry-After) within a second, never a hang.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from base64 import b64decode
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

import httpx
import msgspec
from prometheus_client import Counter, Gauge, Histogram

from api.lib.errors import InvalidInput, UpstreamBadOutput, UpstreamUnavailable
from api.lib.settings import Settings
from api.system.readiness import ReadinessCheck

REQUESTS = Counter(
    "setu_serving_requests_total",
    "Calls to the ML tier, by operation and outcome (ok, rejected, model_unavailable, bad_output, timeout, "
    "unreachable, server_error, breaker_open).",
    ["operation", "outcome"],
)
DURATION = Histogram(
    "setu_serving_request_duration_seconds",
    "Time a call to the ML tier took, retries included.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40),
)
CIRCUIT_OPEN = Gauge(
    "setu_serving_circuit_open",
    "1 while the circuit breaker to the ML tier is open (calls fail fast), else 0.",
    multiprocess_mode="max",
)

_BACKOFF_SECONDS = 0.05
_RETRY_BUDGET_SECONDS = 0.8  # no retry starts later than this after the call began
_RETRIABLE_STATUS = {502, 503, 504}


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failed calls; after `reset_seconds` one probe call is let
    through (half-open): its success closes the circuit, its failure opens it again."""

    def __init__(self, failure_threshold: int = 5, reset_seconds: float = 10.0) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probe_in_flight = False

    def retry_after(self) -> int:
        """Whole seconds until the next probe may go through (at least 1)."""
        remaining = self.opened_at + self.reset_seconds - time.monotonic()
        return max(1, math.ceil(remaining))

    def admit(self) -> bool:
        """Whether a call may go out now; in half-open state only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if time.monotonic() - self.opened_at < self.reset_seconds:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self.failures = 0
        self._probe_in_flight = False
        if self.state is not BreakerState.CLOSED:
            self.state = BreakerState.CLOSED
            CIRCUIT_OPEN.set(0)

    def record_failure(self) -> None:
        self.failures += 1
        probe_failed = self.state is BreakerState.HALF_OPEN
        self._probe_in_flight = False
        if probe_failed or self.failures >= self.failure_threshold:
            self.state = BreakerState.OPEN
            self.opened_at = time.monotonic()
            CIRCUIT_OPEN.set(1)

    def release(self) -> None:
        """A call ended without telling anything about serving's health (e.g. it was rejected as invalid)."""
        self._probe_in_flight = False


class ChatResult(msgspec.Struct, frozen=True):
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    finish_reason: str = "stop"


_UNHEALTHY_OUTCOMES = {"unreachable", "timeout", "server_error"}


class _Failure(Exception):
    """One failed attempt: what to tell the caller, and whether another attempt may help."""

    def __init__(self, outcome: str, detail: str, *, retriable: bool = False) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.retriable = retriable

    @property
    def unhealthy(self) -> bool:
        """Whether this failure says serving itself is in trouble (counts towards opening the breaker)."""
        return self.outcome in _UNHEALTHY_OUTCOMES


class _Rejected(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _error_message(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from serving's OpenAI-style error body, or from whatever else answered."""
    try:
        error = response.json().get("error", {})
        return str(error.get("code") or ""), str(error.get("message") or response.reason_phrase)
    except (ValueError, AttributeError):
        return "", (response.text.strip()[:300] or response.reason_phrase)


class EmbedCoalescer:
    """Concurrent `embed` calls become one request: a call goes out at once while fewer than `max_in_flight`
    are out; callers arriving meanwhile wait and leave together in the next one (up to `max_texts` texts,
    identical texts sent once). A lone call waits for nothing; under load the HTTP calls, not the texts,
    are fewer. A combined call the ML tier rejects (one text too long, say) is retried per caller, so one
    caller's bad input never fails the others."""

    def __init__(
        self,
        send: Callable[[list[str]], Awaitable[list[list[float]]]],
        *,
        max_texts: int = 64,
        max_in_flight: int = 2,
    ) -> None:
        self.send = send
        self.max_texts = max_texts
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.calls = 0  # requests sent (for tests and benches)
        self._pending: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (tests): nothing pending carries over
            self._loop, self._pending, self.in_flight = loop, [], 0
        if len(texts) >= self.max_texts:
            self.calls += 1
            return await self.send(texts)
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        self._pending.append((texts, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._pending and self.in_flight < self.max_in_flight:
            group = [self._pending.pop(0)]
            size = len(group[0][0])
            while self._pending and size + len(self._pending[0][0]) <= self.max_texts:
                size += len(self._pending[0][0])
                group.append(self._pending.pop(0))
            self.in_flight += 1
            task = asyncio.create_task(self._send(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, group: list[tuple[list[str], asyncio.Future[list[list[float]]]]]) -> None:
        try:
            live = [(texts, future) for texts, future in group if not future.done()]
            if not live:
                return
            unique = list(dict.fromkeys(text for texts, _ in live for text in texts))
            try:
                self.calls += 1
                vectors = dict(zip(unique, await self.send(unique), strict=True))
            except InvalidInput as error:
                if len(live) == 1:
                    _settle(live[0][1], error=error)
                    return
                for texts, future in live:  # one caller's bad text must not fail the rest
                    try:
                        self.calls += 1
                        _settle(future, result=await self.send(texts))
                    except Exception as single:
                        _settle(future, error=single)
                return
            except Exception as error:
                for _, future in live:
                    _settle(future, error=error)
                return
            for texts, future in live:
                _settle(future, result=[vectors[text] for text in texts])
        finally:
            self.in_flight -= 1
            self._dispatch()


def _settle(
    future: asyncio.Future[list[list[float]]],
    *,
    result: list[list[float]] | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():  # its caller went away (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


class ServingClient:
    """One per process (`app.state.serving`); pooled connections to serving's HTTP ingress."""

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout: float = 10.0,
        generation_timeout: float = 40.0,
        connect_timeout: float = 0.25,
        retries: int = 2,
        breaker: CircuitBreaker | None = None,
        max_connections: int = 64,
        coalesce_texts: int = 64,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.generation_timeout = generation_timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.breaker = breaker or CircuitBreaker()
        self._http = httpx.AsyncClient(
            base_url=base_url or "http://serving.invalid",
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self.coalescer = EmbedCoalescer(self._embed_call, max_texts=coalesce_texts)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingClient:
        return cls(
            settings.serving_url,
            timeout=settings.serving_timeout_seconds,
            generation_timeout=settings.serving_generation_timeout_seconds,
            connect_timeout=settings.serving_connect_timeout_seconds,
            retries=settings.serving_retries,
            breaker=CircuitBreaker(settings.serving_breaker_failures, settings.serving_breaker_reset_seconds),
        )

    # -- operations -------------------------------------------------------------------------------------

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors (384 numbers with the default model), one per text, in order; calls made at
        the same time share requests (EmbedCoalescer)."""
        if not texts:
            return []
        return await self.coalescer.embed(texts)

    async def _embed_call(self, texts: list[str]) -> list[list[float]]:
        body = await self._call(
            "embed", "POST", "/v1/embeddings", {"input": texts, "encoding_format": "base64"}, idempotent=True
        )
        vectors: list[list[float]] = []
        for item in sorted(body["data"], key=lambda item: item["index"]):
            raw = b64decode(item["embedding"])
            vectors.append(list(struct.unpack(f"<{len(raw) // 4}f", raw)))
        return vectors

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 512,
        temperature: float = 0.2,
        stop: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        """One chat completion; with `json_schema`, `text` is a JSON document valid against it."""
        request: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            request["stop"] = stop
        if json_schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": json_schema, "strict": True},
            }
        body = await self._call(
            "chat",
            "POST",
            "/v1/chat/completions",
            request,
            idempotent=False,
            read_timeout=self.generation_timeout,
        )
        choice = body["choices"][0]
        usage = body.get("usage") or {}
        return ChatResult(
            text=choice["message"]["content"],
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            model=str(body.get("model", "")),
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    async def translate(self, texts: list[str], *, source: str, target: str) -> list[str]:
        """Each text translated from `source` to `target` (ISO 639 codes), in order."""
        if not texts:
            return []
        body = await self._call(
            "translate",
            "POST",
            "/v1/translations",
            {"texts": texts, "source": source, "target": target},
            idempotent=True,
            read_timeout=self.generation_timeout,
        )
        return [str(text) for text in body["translations"]]

    async def models(self) -> list[dict[str, Any]]:
        """Serving's model cards: id, kind, status (and reason when unavailable), dimensions, languages."""
        body = await self._call("models", "GET", "/v1/models", None, idempotent=True)
        return list(body["data"])

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the one way every call goes ---------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        idempotent: bool,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self._with_retries(method, path, body, idempotent, read_timeout or self.timeout)
        except _Rejected as rejected:
            outcome = "rejected"
            raise InvalidInput(f"the ML tier rejected the request: {rejected.detail}") from None
        except _Failure as failure:
            outcome = failure.outcome
            if outcome == "bad_output":
                raise UpstreamBadOutput(failure.detail) from None
            raise UpstreamUnavailable(
                failure.detail, headers={"Retry-After": str(self._retry_after(failure))}
            ) from None
        finally:
            REQUESTS.labels(operation, outcome).inc()
            DURATION.labels(operation).observe(time.perf_counter() - started)

    def _retry_after(self, failure: _Failure) -> int:
        return self.breaker.retry_after() if failure.outcome == "breaker_open" else 5

    async def _with_retries(
        self, method: str, path: str, body: dict[str, Any] | None, idempotent: bool, read_timeout: float
    ) -> dict[str, Any]:
        if self.base_url is None:
            raise _Failure(
                "unreachable",
                "the ML tier is not configured (SERVING_URL is unset)",
            )
        started = time.monotonic()
        attempt = 0
        while True:
            if not self.breaker.admit():
                raise _Failure(
                    "breaker_open",
                    f"the ML tier keeps failing; calls paused {self.breaker.retry_after()} s (circuit open)",
                )
            try:
                result = await self._attempt(method, path, body, read_timeout)
            except _Failure as failure:
                if failure.unhealthy:
                    self.breaker.record_failure()
                else:
                    self.breaker.release()
                backoff = _BACKOFF_SECONDS * 2**attempt * random.uniform(0.5, 1.5)
                may_retry = failure.retriable and (idempotent or failure.outcome == "unreachable")
                if (
                    not may_retry
                    or attempt >= self.retries
                    or time.monotonic() - started + backoff > _RETRY_BUDGET_SECONDS
                ):
                    raise
                attempt += 1
                await asyncio.sleep(backoff)
                continue
            except _Rejected:
                self.breaker.release()
                raise
            except BaseException:
                # Cancelled (a /ready probe timing out, a caller going away): a half-open probe must not
                # stay "in flight" forever, or the breaker never closes again.
                self.breaker.release()
                raise
            self.breaker.record_success()
            return result

    async def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, read_timeout: float
    ) -> dict[str, Any]:
        try:
            response = await self._http.request(
                method, path, json=body, timeout=httpx.Timeout(read_timeout, connect=self.connect_timeout)
            )
        except httpx.ConnectError as error:
            raise _Failure(
                "unreachable",
                f"the ML tier is unreachable at {self.base_url}: {error}",
                retriable=True,
            ) from None
        except httpx.ConnectTimeout:
            raise _Failure(
                "unreachable",
                f"the ML tier at {self.base_url} accepted no connection in {self.connect_timeout:g} s",
                retriable=True,
            ) from None
        except httpx.TimeoutException:
            raise _Failure("timeout", f"the ML tier did not answer within {read_timeout:g} s") from None
        except httpx.TransportError as error:
            raise _Failure(
                "unreachable", f"the ML tier connection failed: {error!r}", retriable=True
            ) from None
        if response.is_success:
            parsed: dict[str, Any] = response.json()
            return parsed
        code, message = _error_message(response)
        if response.status_code < 500:
            raise _Rejected(message)
        if code == "model_unavailable":
            raise _Failure("model_unavailable", f"model unavailable: {message}")
        if code == "invalid_model_output":
            raise _Failure("bad_output", f"the model's output was unusable: {message}")
        raise _Failure(
            "server_error",
            f"the ML tier answered {response.status_code}: {message}",
            retriable=response.status_code in _RETRIABLE_STATUS,
        )


def serving_checks(client: ServingClient) -> list[ReadinessCheck]:
    """`/ready` components: `serving` (reachable, embeddings work) and `generation` (the generator)."""

    async def cards() -> dict[str, dict[str, Any]]:
        return {str(card.get("kind")): card for card in await client.models()}

    async def serving() -> None:
        embedder = (await cards()).get("embedding")
        if embedder is None or embedder.get("status") != "available":
            reason = (embedder or {}).get("reason", "not listed")
            raise RuntimeError(f"embedding model unavailable: {reason}")

    async def generation() -> None:
        generator = (await cards()).get("generation")
        if generator is None or generator.get("status") != "available":
            raise RuntimeError(
                f"generation model unavailable: {(generator or {}).get('reason', 'not listed')}"
            )

    return [
        ReadinessCheck("serving", serving, required=False),
        ReadinessCheck("generation", generation, required=False),
    ]
