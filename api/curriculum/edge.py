"""Curriculum answers already in memory, sent before routing, dependency injection and the middleware stack.

GPTs ask the same reference questions again and again (getStandard M707, the chapters of class 7 science, the
same search). The first ask takes the full path; when the curriculum cache remembers its answer, the exact
request target (path and raw query string) is noted with the route it reached. The next GET of that target
is answered here, with the full path's guarantees in the full path's order: clean text in every header, a
valid bearer token carrying the route's scope, one Redis call for revocation, app suspension and rate limits,
an audit event, metrics, the request id and the RateLimit headers. What this path would not answer the same
way (no valid token, a missing scope, a header the full path refuses) passes through untouched, before any
side effect, so the full path answers it exactly as before. Refusals from the Redis call are answered here.

A noted target is only a pointer to the cache's answer: a curriculum change empties both, so nothing here
can outlive the data it came from.
"""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

from api.curriculum.cache import ANSWERED_KEY, CurriculumCache, RememberedRoute
from api.lib.cleantext import check_scope
from api.lib.errors import DomainError
from api.lib.observability import in_progress, observe, request_id_for, request_id_header, route_template
from api.oauth.guards import admit, audit_call, operation_of, refuse, verify
from api.oauth.runtime import OAuthRuntime

_JSON_HEADERS = [(b"content-type", b"application/json")]
_CURRICULUM_PREFIX = "/api/v1/curriculum/"


class CurriculumEdge:
    """ASGI wrapper of the app's handler: answers remembered curriculum GETs (see the module docstring)."""

    def __init__(self, app: ASGIApp, cache: CurriculumCache, runtime: OAuthRuntime) -> None:
        self.app = app
        self.cache = cache
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "GET":  # type: ignore[typeddict-item]
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(_CURRICULUM_PREFIX):
            await self.app(scope, receive, send)
            return
        target = (path, scope["query_string"])  # type: ignore[typeddict-item]
        remembered = self.cache.remembered(target)
        if remembered is not None and await self._answer(scope, receive, send, *remembered):
            return
        await self._pass(scope, receive, send, target)

    async def _pass(self, scope: Scope, receive: Receive, send: Send, target: tuple[str, bytes]) -> None:
        """The full path; a 200 whose answer the cache remembered notes the target for next time."""
        status = 0

        async def watch_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch_status)
        answered = scope.get("state", {}).get(ANSWERED_KEY)
        handler = scope.get("route_handler")
        if status != 200 or answered is None or handler is None:
            return
        scopes = handler.opt.get("scope")
        if not isinstance(scopes, str):
            return  # only guarded routes: the edge must know the scope to check
        key, generation = answered
        route = RememberedRoute(
            key, operation_of(scope), route_template(scope), frozenset(scopes.split()), generation
        )
        self.cache.note_target(target, route)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, route: RememberedRoute, body: bytes
    ) -> bool:
        """Answer from memory, or False (before any side effect) to let the full path answer."""
        if check_scope(scope) is not None:
            return False
        runtime = self.runtime
        try:
            claims = await verify(runtime, scope)
        except DomainError:
            return False
        if claims.scopes.isdisjoint(route.scopes):
            return False
        started = time.perf_counter()
        request_id = request_id_for(scope)
        scope["state"]["request_id"] = request_id
        gauge = in_progress("GET")
        gauge.inc()
        status = 500
        try:
            try:
                decision = await admit(runtime, claims)
            except DomainError as error:
                status = error.status_code
                id_header = request_id_header(request_id)

                async def send_with_id(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        message["headers"] = [*message.get("headers", ()), id_header]
                    await send(message)

                await refuse(
                    runtime, scope, receive, send_with_id, error, route.operation, started, claims, request_id
                )
                return True
            headers: list[tuple[bytes, bytes]] = [
                *_JSON_HEADERS,
                (b"content-length", str(len(body)).encode()),
                *decision.raw_headers(),
                request_id_header(request_id),
            ]
            status = 200
            try:
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": headers,
                }
                await send(start)
                await send({"type": "http.response.body", "body": body, "more_body": False})
            finally:
                audit_call(runtime, route.operation, status, started, claims, request_id)
            return True
        finally:
            gauge.dec()
            observe("GET", route.route, status, time.perf_counter() - started)
