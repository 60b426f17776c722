"""The machine-facing OAuth endpoints: token, revoke, introspect, server metadata and JWKS.

Errors here follow RFC 6749 §5.2 (`{"error", "error_description"}`), not problem details, because OAuth
client libraries (and ChatGPT) parse that shape. Every token decision is counted and audited.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from api.apps.models import GptApp
from api.oauth.runtime import OAuthRuntime, runtime_of
from api.oauth.schemas import Introspection, JsonWebKeySet, ServerMetadata, TokenError, TokenResponse
from api.oauth.scopes import SCOPES
from api.oauth.services import OAuthError, client_credentials_from

TOKENS = Counter(
    "setu_oauth_tokens_total",
    "Token endpoint decisions, by grant type and outcome.",
    ["grant_type", "outcome"],
)
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_OAUTH_ERRORS = {
    400: ResponseSpec(
        TokenError, description="invalid_request, invalid_grant, invalid_scope, unsupported_grant_type..."
    ),
    401: ResponseSpec(TokenError, description="invalid_client: client authentication failed"),
    429: ResponseSpec(TokenError, description="too many failed client authentications"),
}


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    """The peer address (uvicorn's `--proxy-headers` resolves trusted proxies into it)."""
    return request.client.host if request.client else None


async def read_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The form body as single values; a repeated parameter is an `invalid_request` (RFC 6749 §3.1)."""
    form = await request.form()
    values: dict[str, str] = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise OAuthError("invalid_request", f"parameter {name!r} must be a plain form value")
        if name in values:
            raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        values[name] = value
    return values


async def _client_and_token(
    runtime: OAuthRuntime, session: AsyncSession, request: Request[Any, Any, Any]
) -> tuple[GptApp, str]:
    """Revocation and introspection: authenticate the calling client, then read the `token` it names."""
    form = await read_form(request)
    credentials = client_credentials_from(request.headers.get("authorization"), form)
    app = await runtime.server.authenticate_client(session, credentials, client_ip(request))
    token = form.get("token")
    if not token:
        raise OAuthError("invalid_request", "token is required")
    return app, token


def _error(error: OAuthError) -> Response[TokenError]:
    return Response(
        TokenError(error.error, error.description),
        status_code=error.status,
        headers={**_NO_STORE, **error.headers},
    )


class OAuthController(Controller):
    tags = ["oauth"]

    @post(
        "/oauth/token",
        operation_id="issueToken",
        summary="Token endpoint (RFC 6749): authorization_code, refresh_token, client_credentials.",
        status_code=200,
        responses=_OAUTH_ERRORS,
    )
    async def token(self, request: Request[Any, Any, State]) -> Response[Any]:
        started = time.perf_counter()
        runtime = runtime_of(request.app)
        grant_label, app_id, client_id, user_id = "unsupported", None, None, None
        try:
            form = await read_form(request)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", "grant_type is required")
            if grant_type not in GRANT_TYPES:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
            grant_label = grant_type
            credentials = client_credentials_from(request.headers.get("authorization"), form)
            client_id = credentials.client_id[:64]
            async with runtime.sessions() as session:
                app = await runtime.server.authenticate_client(session, credentials, client_ip(request))
                app_id = app.id
                response: TokenResponse
                if grant_type == "authorization_code":
                    response, user_id = await runtime.server.exchange_code(
                        session, app, form.get("code"), form.get("redirect_uri"), form.get("code_verifier")
                    )
                elif grant_type == "refresh_token":
                    response, user_id = await runtime.server.refresh(
                        session, app, form.get("refresh_token"), form.get("scope")
                    )
                else:
                    response = await runtime.server.client_credentials(session, app, form.get("scope"))
        except OAuthError as error:
            TOKENS.labels(grant_label, "refused").inc()
            _audit(
                runtime, request, grant_label, error.status, started, app_id, client_id, user_id, error.error
            )
            return _error(error)
        TOKENS.labels(grant_label, "issued").inc()
        _audit(runtime, request, grant_label, 200, started, app_id, client_id, user_id, None)
        return Response(response, headers=_NO_STORE)

    @post(
        "/oauth/revoke",
        operation_id="revokeToken",
        summary="Token revocation (RFC 7009): always 200 for a well-formed request.",
        status_code=200,
        responses=_OAUTH_ERRORS,
    )
    async def revoke(self, request: Request[Any, Any, State]) -> Response[Any]:
        runtime = runtime_of(request.app)
        try:
            async with runtime.sessions() as session:
                app, token = await _client_and_token(runtime, session, request)
                await runtime.server.revoke(session, app, token)
                await session.commit()
        except OAuthError as error:
            return _error(error)
        return Response(b"", headers=_NO_STORE)

    @post(
        "/oauth/introspect",
        operation_id="introspectToken",
        summary="Token introspection (RFC 7662) for the calling app's own tokens.",
        status_code=200,
        responses=_OAUTH_ERRORS,
    )
    async def introspect(self, request: Request[Any, Any, State]) -> Response[Any]:
        runtime = runtime_of(request.app)
        try:
            async with runtime.sessions() as session:
                app, token = await _client_and_token(runtime, session, request)
                result: Introspection = await runtime.server.introspect(session, app, token)
        except OAuthError as error:
            return _error(error)
        return Response(result, headers=_NO_STORE)

    @get(
        "/.well-known/oauth-authorization-server",
        operation_id="getAuthorizationServerMetadata",
        summary="Authorization server metadata (RFC 8414).",
    )
    async def metadata(self, request: Request[Any, Any, State]) -> ServerMetadata:
        base = runtime_of(request.app).settings.base_url
        return ServerMetadata(
            issuer=base,
            authorization_endpoint=f"{base}/oauth/authorize",
            token_endpoint=f"{base}/oauth/token",
            jwks_uri=f"{base}/.well-known/jwks.json",
            revocation_endpoint=f"{base}/oauth/revoke",
            introspection_endpoint=f"{base}/oauth/introspect",
            scopes_supported=list(SCOPES),
            response_types_supported=["code"],
            response_modes_supported=["query"],
            grant_types_supported=list(GRANT_TYPES),
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post", "none"],
            revocation_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post", "none"],
            introspection_endpoint_auth_methods_supported=[
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            code_challenge_methods_supported=["S256"],
            authorization_response_iss_parameter_supported=True,
            service_documentation=f"{base}/schema",
        )

    @get(
        "/.well-known/jwks.json",
        operation_id="getJsonWebKeySet",
        summary="Public keys that sign access tokens.",
    )
    async def jwks(self, request: Request[Any, Any, State]) -> Response[JsonWebKeySet]:
        runtime = runtime_of(request.app)
        async with runtime.sessions() as session:
            keys = await runtime.keys.published(session)
        if not keys:  # start-up could not make the first key (database down then): make it now
            await runtime.keys.ensure_key()
            async with runtime.sessions() as session:
                keys = await runtime.keys.published(session)
        return Response(JsonWebKeySet(keys=keys), headers={"Cache-Control": "public, max-age=60"})


def _audit(
    runtime: OAuthRuntime,
    request: Request[Any, Any, Any],
    grant_type: str,
    status: int,
    started: float,
    app_id: Any,
    client_id: str | None,
    user_id: Any,
    error: str | None,
) -> None:
    runtime.audit.record(
        "token",
        f"token.{grant_type}",
        status,
        (time.perf_counter() - started) * 1000,
        app_id=app_id,
        client_id=client_id,
        user_id=user_id,
        error=error,
        request_id=request.scope.get("state", {}).get("request_id"),
    )
