"""Who is calling `/api/v1`, and may they: bearer-token authentication, rate limits and scope guards.

`BearerAuthMiddleware` runs for every `/api/v1` request: it verifies the JWT locally, then makes one Redis
call (an atomic script) that refuses revoked tokens and suspended apps and applies the app's and the user's
rate limits. The request then carries a `Principal` as `request.user`. Handlers declare their scope with
`guards=[requires_scope("memories:write")]`. Every call is recorded in the audit log after it is answered.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.lib.errors import DomainError, PermissionDenied, TooManyRequests, Unauthorized, domain_error_handler
from api.lib.observability import route_template
from api.lib.ratelimit import Check, Decision, Limit
from api.oauth.denylist import app_blocked_key, grant_key, token_key
from api.oauth.runtime import OAuthRuntime
from api.oauth.scopes import SCOPES
from api.oauth.tokens import AccessTokenClaims, InvalidToken

API_PREFIX = "/api/v1"
REALM = "shikshasetu"
_AUTHORIZATION = b"authorization"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of an `/api/v1` route: a GPT app, acting for an end user unless `user_id` is None."""

    app_id: uuid.UUID
    client_id: str
    user_id: uuid.UUID | None
    """None for tokens from the client-credentials grant."""
    scopes: frozenset[str]
    token_id: str
    """The access token's `jti`."""


def _challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


class ScopeGuard:
    """A Litestar guard requiring a scope (or any one of several); `scope` (space-separated, as OAuth
    writes scopes) and `scopes` are readable by the OpenAPI and GPT schema builders."""

    def __init__(self, *scopes: str) -> None:
        unknown = [scope for scope in scopes if scope not in SCOPES]
        if not scopes or unknown:
            raise ValueError(f"unknown scope {unknown}; known: {', '.join(SCOPES)}")
        self.scopes = scopes
        self.scope = " ".join(scopes)

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.scope.get("user")
        if not isinstance(principal, Principal):
            raise Unauthorized(
                "This route needs a bearer access token.", headers={"WWW-Authenticate": _challenge()}
            )
        if principal.scopes.isdisjoint(self.scopes):
            needed = " or ".join(repr(scope) for scope in self.scopes)
            raise PermissionDenied(
                f"The access token lacks the scope {needed} this operation needs.",
                headers={"WWW-Authenticate": _challenge("insufficient_scope", scope=self.scope)},
                error="insufficient_scope",
                scope=self.scope,
            )

    def __repr__(self) -> str:
        return f"requires_scope({', '.join(repr(scope) for scope in self.scopes)})"


def requires_scope(scope: str) -> ScopeGuard:
    """The guard for a route that needs `scope`: 401 without a valid token, 403 `insufficient_scope`."""
    return ScopeGuard(scope)


def requires_any_scope(*scopes: str) -> ScopeGuard:
    """The guard for a route that any one of `scopes` opens (e.g. a job started by either tool)."""
    return ScopeGuard(*scopes)


def scope_of(handler: BaseRouteHandler) -> str | None:
    """The scope a route handler requires (from its scope guard; space-separated alternatives), if any."""
    for guard in handler.resolve_guards():
        target = getattr(guard, "func", guard)  # sync guards are wrapped by Litestar
        if isinstance(target, ScopeGuard):
            return target.scope
    return None


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _AUTHORIZATION:
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                token = text[7:].strip()
                return token or None
            return None
    return None


def operation_of(scope: Scope) -> str:
    handler = scope.get("route_handler")
    operation_id = getattr(handler, "operation_id", None)
    if isinstance(operation_id, str):
        return operation_id
    return f"{scope.get('method', 'GET')} {route_template(scope)}"


def _limits(claims: AccessTokenClaims) -> list[Limit]:
    limits = [Limit("app", f"rl:{{{claims.app_id}}}:app", claims.app_rate_limit)]
    if claims.user_id is not None:
        limits.append(Limit("user", f"rl:{{{claims.app_id}}}:user:{claims.user_id}", claims.user_rate_limit))
    return limits


class BearerAuthMiddleware:
    """Authenticates, rate-limits and audits every `/api/v1` request (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != ScopeType.HTTP or not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        runtime: OAuthRuntime = scope["litestar_app"].state.oauth
        operation = operation_of(scope)
        request_id = scope.get("state", {}).get("request_id")
        claims: AccessTokenClaims | None = None
        try:
            claims = await verify(runtime, scope)
            decision = await admit(runtime, claims)
        except DomainError as error:
            # Answer here, through `send`, so outer middleware (request id, metrics) sees the response.
            await refuse(runtime, scope, receive, send, error, operation, started, claims, request_id)
            return
        scope["user"] = Principal(claims.app_id, claims.client_id, claims.user_id, claims.scopes, claims.jti)
        scope["auth"] = claims
        extra_headers = decision.raw_headers()
        status = 500

        async def send_with_limits(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if extra_headers:
                    message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            audit_call(runtime, operation, status, started, claims, request_id)


def audit_call(
    runtime: OAuthRuntime,
    operation: str,
    status: int,
    started: float,
    claims: AccessTokenClaims | None,
    request_id: str | None,
    error: str | None = None,
) -> None:
    """Record one `/api/v1` call in the audit log (`started`: its `time.perf_counter()` at arrival)."""
    runtime.audit.record(
        "api",
        operation,
        status,
        (time.perf_counter() - started) * 1000,
        app_id=claims.app_id if claims else None,
        client_id=claims.client_id if claims else None,
        user_id=claims.user_id if claims else None,
        error=error,
        request_id=request_id,
    )


async def refuse(
    runtime: OAuthRuntime,
    scope: Scope,
    receive: Receive,
    send: Send,
    error: DomainError,
    operation: str,
    started: float,
    claims: AccessTokenClaims | None,
    request_id: str | None,
) -> None:
    """Answer a refused `/api/v1` call (problem details, the error's headers); record it in the audit log."""
    reason = str(error.extra.get("error", error.title)).lower().replace(" ", "_")[:64]
    audit_call(runtime, operation, error.status_code, started, claims, request_id, reason)
    request: Request[Any, Any, Any] = Request(scope)
    response = domain_error_handler(request, error).to_asgi_response(app=None, request=request)
    await response(scope, receive, send)


async def verify(runtime: OAuthRuntime, scope: Scope) -> AccessTokenClaims:
    token = _bearer(scope)
    if token is None:
        raise Unauthorized(
            "This API needs an OAuth access token: send `Authorization: Bearer <token>`.",
            headers={"WWW-Authenticate": _challenge()},
        )
    try:
        claims = await runtime.tokens.verify(token)
    except InvalidToken as error:
        raise Unauthorized(
            f"Invalid access token: {error}.",
            headers={"WWW-Authenticate": _challenge("invalid_token", str(error))},
            error="invalid_token",
        ) from None
    return claims


def _check(runtime: OAuthRuntime, claims: AccessTokenClaims) -> Check:
    """The token's limiter call: revoked token or grant, suspended app, the app's and the user's limits."""

    def prepare() -> Check:
        blocks = [
            app_blocked_key(claims.app_id),
            token_key(claims.app_id, claims.jti),
            grant_key(claims.app_id, claims.grant_id),
        ]
        return runtime.limiter.check(_limits(claims), blocks=blocks)

    return runtime.limiter.remembered(claims.jti, prepare)


async def admit(runtime: OAuthRuntime, claims: AccessTokenClaims) -> Decision:
    """One Redis round trip: revoked token or grant, suspended app, then the app's and the user's limits."""
    check = _check(runtime, claims)
    decision = await runtime.limiter.run(check)
    if decision.blocked_by == check.blocks[0]:
        raise PermissionDenied(
            "This GPT app is suspended or deleted; ask the ShikshaSetu administrator.", error="app_suspended"
        )
    if decision.blocked_by is not None:
        raise Unauthorized(
            "Invalid access token: it has been revoked.",
            headers={"WWW-Authenticate": _challenge("invalid_token", "the access token has been revoked")},
            error="invalid_token",
        )
    if not decision.allowed:
        raise TooManyRequests(
            f"Rate limit of {decision.limit} requests per minute per {decision.refused_by} reached; "
            f"retry after {decision.headers().get('Retry-After', '1')} s.",
            headers=decision.headers(),
            error="rate_limited",
            limit=decision.refused_by,
        )
    return decision


def document_scopes(app: Litestar, base_url: str) -> None:
    """Publish each guarded route's scope: in `handler.opt["scope"]` (for the GPT schema builder) and as an
    OpenAPI security requirement on our `oauth2` scheme (authorization code and client credentials flows)."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            scope = scope_of(handler)
            if scope is None:
                continue
            handler.opt.setdefault("scope", scope)
            if not handler.security:
                handler.security = [{"oauth2": [alternative]} for alternative in scope.split()]
    flows = OAuthFlows(
        authorization_code=OAuthFlow(
            authorization_url=f"{base_url}/oauth/authorize",
            token_url=f"{base_url}/oauth/token",
            refresh_url=f"{base_url}/oauth/token",
            scopes=dict(SCOPES),
        ),
        client_credentials=OAuthFlow(token_url=f"{base_url}/oauth/token", scopes=dict(SCOPES)),
    )
    scheme = Components(security_schemes={"oauth2": SecurityScheme(type="oauth2", flows=flows)})
    config = app.openapi_config
    if config is not None:
        existing = config.components
        config.components = [*existing, scheme] if isinstance(existing, list) else [existing, scheme]
