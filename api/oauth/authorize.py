"""`/oauth/authorize`: the pages a person sees (sign in, then consent), server-rendered, no JavaScript.

1. GET checks the request. A bad `client_id` or `redirect_uri` is shown on our error page and never
   redirected (RFC 6749 §4.1.2.1); other errors go back to the app's redirect URI with `error` and `state`.
2. POST `step=login` checks the password (argon2id; failures limited per IP and per e-mail) and shows the
   consent page, which carries a single-use ticket (in Redis, 10 minutes) holding the checked request.
3. POST `step=consent` consumes the ticket and redirects with a code (or `access_denied`), `state` and `iss`.

Both forms carry a CSRF token that must equal the `setu_csrf` cookie (SameSite=Lax, HttpOnly).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import uuid
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from redis.exceptions import RedisError
from sqlalchemy import select

from api.accounts.models import User
from api.accounts.services import authenticate
from api.apps.models import AppStatus, GptApp
from api.apps.services import ADMIN_TOOLS_CLIENT_ID, ensure_admin_tools_app
from api.lib.ratelimit import Limit
from api.oauth.controllers import client_ip, read_form
from api.oauth.crypto import credential_hash
from api.oauth.runtime import OAuthRuntime, runtime_of
from api.oauth.scopes import SCOPES, canonical, parse_scope
from api.oauth.services import IP_LIMIT_FACTOR, OAuthError, grantable_scopes, resolve_scopes

CSRF_COOKIE = "setu_csrf"
TICKET_SECONDS = 600
LOGIN_WINDOW_SECONDS = 600.0
_MAX_PARAMETER = 2048
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_templates = Environment(
    loader=PackageLoader("api.oauth", "templates"),
    autoescape=select_autoescape(default=True),
    auto_reload=False,
)


class PageError(Exception):
    """Shown on our own error page (the redirect URI is unknown or untrusted)."""

    def __init__(self, title: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail
        self.status = status


class RedirectError(Exception):
    """Sent back to the app's (verified) redirect URI as `error` + `error_description` + `state`."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state

    def response(self, issuer: str) -> Response[Any]:
        return _redirect_to(
            self.redirect_uri,
            error=self.error,
            error_description=self.description,
            state=self.state,
            iss=issuer,
        )


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request, as carried by the login form and the consent ticket."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str | None


async def _check(runtime: OAuthRuntime, params: dict[str, str]) -> tuple[GptApp, AuthorizationRequest]:
    client_id = params.get("client_id")
    if not client_id:
        raise PageError("Incomplete sign-in link", "The link that brought you here has no client_id.")
    async with runtime.sessions() as session:
        app = await session.scalar(select(GptApp).where(GptApp.client_id == client_id))
        if app is None and client_id == ADMIN_TOOLS_CLIENT_ID:  # built in, registered on first use
            app = await ensure_admin_tools_app(session, runtime.settings)
    if app is None:
        raise PageError("Unknown app", "No app with this client_id is registered with ShikshaSetu.")
    redirect_uri = params.get("redirect_uri")
    if not redirect_uri:
        raise PageError("Incomplete sign-in link", "The link that brought you here has no redirect_uri.")
    if redirect_uri not in app.redirect_uris:
        raise PageError(
            "Unregistered redirect URI",
            f"{redirect_uri} is not a registered callback of “{app.name}”. An administrator can add it with "
            f"`setu apps update {app.client_id} --redirect-uri ...`.",
        )
    if app.status != AppStatus.ACTIVE:
        raise PageError(
            "App suspended", f"“{app.name}” is suspended; ask the ShikshaSetu administrator.", 403
        )
    state = params.get("state")

    def back(error: str, description: str) -> RedirectError:
        return RedirectError(error, description, redirect_uri, state)

    if params.get("response_type") != "code":
        raise back("unsupported_response_type", "only response_type=code is supported")
    if "authorization_code" not in app.grant_types:
        raise back("unauthorized_client", "this app may not use the authorization code grant")
    try:
        scopes = resolve_scopes(params.get("scope"), app, role=None)
    except OAuthError as error:
        raise back(error.error, error.description) from None
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method")
    if challenge is None and method:
        raise back("invalid_request", "code_challenge_method without code_challenge")
    if challenge is not None:
        if (method or "plain") != "S256":
            raise back("invalid_request", "only code_challenge_method=S256 is supported")
        if not _CHALLENGE.match(challenge):
            raise back("invalid_request", "code_challenge must be 43 base64url characters (S256)")
    elif app.require_pkce:
        raise back("invalid_request", "this app must use PKCE: send code_challenge (S256)")
    request = AuthorizationRequest(app.client_id, redirect_uri, " ".join(scopes), state, challenge)
    return app, request


def _redirect_to(uri: str, **params: str | None) -> Response[Any]:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(name, value) for name, value in params.items() if value is not None]
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return Response(b"", status_code=303, headers={"Location": location, "Cache-Control": "no-store"})


def _page(template: str, status: int = 200, cookie: Cookie | None = None, **context: Any) -> Response[Any]:
    html = _templates.get_template(template).render(**context)
    return Response(
        html,
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers=_PAGE_HEADERS,
        cookies=[cookie] if cookie else None,
    )


def _csrf_cookie(request: Request[Any, Any, Any], runtime: OAuthRuntime) -> tuple[str, Cookie | None]:
    """The CSRF token of this browser, minting one (and its cookie) on first visit."""
    token = request.cookies.get(CSRF_COOKIE)
    if token and 32 <= len(token) <= 64:
        return token, None
    token = secrets.token_urlsafe(32)
    cookie = Cookie(
        key=CSRF_COOKIE,
        value=token,
        path="/oauth/authorize",
        httponly=True,
        samesite="lax",
        secure=runtime.settings.base_url.startswith("https://"),
        max_age=3600,
    )
    return token, cookie


def _csrf_ok(request: Request[Any, Any, Any], form: dict[str, str]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    sent = form.get("csrf_token") or ""
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


def _scope_rows(scopes: list[str]) -> list[dict[str, str]]:
    return [{"name": name, "description": SCOPES[name]} for name in canonical(scopes)]


class AuthorizeController(Controller):
    path = "/oauth/authorize"
    tags = ["oauth"]
    include_in_schema = False

    @get(operation_id="showAuthorization", summary="Sign-in page of the authorization endpoint.")
    async def show(self, request: Request[Any, Any, State]) -> Response[Any]:
        runtime = runtime_of(request.app)
        params = dict(request.query_params.items())
        try:
            if any(len(request.query_params.getall(name)) > 1 for name in request.query_params):
                raise PageError("Malformed sign-in link", "A parameter appears more than once in the link.")
            if any(len(value) > _MAX_PARAMETER for value in params.values()):
                raise PageError("Malformed sign-in link", "A parameter of the link is too long.")
            app, checked = await _check(runtime, params)
        except PageError as error:
            return _page("error.html", error.status, title=error.title, detail=error.detail)
        except RedirectError as error:
            return error.response(runtime.settings.base_url)
        token, cookie = _csrf_cookie(request, runtime)
        return _login_page(app, checked, token, cookie=cookie)

    @post(
        operation_id="submitAuthorization", summary="Sign-in and consent form submissions.", status_code=200
    )
    async def submit(self, request: Request[Any, Any, State]) -> Response[Any]:
        runtime = runtime_of(request.app)
        try:
            form = await read_form(request)
        except OAuthError as error:
            return _page("error.html", 400, title="Malformed form", detail=error.description)
        if not _csrf_ok(request, form):
            return _page(
                "error.html",
                403,
                title="Your session has expired",
                detail="This form was not sent from the sign-in page we showed you (or cookies are blocked). "
                "Go back to the app and start signing in again.",
            )
        try:
            if form.get("step") == "consent":
                return await _consent(runtime, form)
            return await _login(runtime, request, form)
        except PageError as error:
            return _page("error.html", error.status, title=error.title, detail=error.detail)
        except RedirectError as error:
            return error.response(runtime.settings.base_url)
        except RedisError:
            return _page(
                "error.html", 503, title="Try again shortly", detail="Sign-in is briefly unavailable."
            )


def _login_page(
    app: GptApp,
    checked: AuthorizationRequest,
    csrf_token: str,
    *,
    cookie: Cookie | None = None,
    error: str | None = None,
    email: str = "",
    status: int = 200,
) -> Response[Any]:
    return _page(
        "login.html",
        status,
        cookie=cookie,
        app_name=app.name,
        request=asdict(checked),
        csrf_token=csrf_token,
        error=error,
        email=email,
    )


async def _login(
    runtime: OAuthRuntime, request: Request[Any, Any, Any], form: dict[str, str]
) -> Response[Any]:
    app, checked = await _check(runtime, form)
    email = form.get("email", "").strip().lower()[:320]
    password = form.get("password", "")
    csrf_token = form["csrf_token"]
    limits = [
        Limit(
            "login",
            f"rl:{{login}}:email:{credential_hash(email)}",
            runtime.settings.client_auth_failure_limit,
            LOGIN_WINDOW_SECONDS,
        )
    ]
    ip = client_ip(request)
    if ip:
        limits.append(
            Limit(
                "login",
                f"rl:{{login}}:ip:{ip}",
                runtime.settings.client_auth_failure_limit * IP_LIMIT_FACTOR,
                LOGIN_WINDOW_SECONDS,
            )
        )
    decision = await runtime.limiter.peek(limits)
    if not decision.allowed:
        minutes = max(1, round(decision.retry_after / 60))
        return _login_page(
            app,
            checked,
            csrf_token,
            email=email,
            status=429,
            error=f"Too many failed sign-ins. Try again in about {minutes} minute(s).",
        )
    async with runtime.sessions() as session:
        user = await authenticate(session, runtime.passwords, email, password) if email and password else None
        if user is None:
            await runtime.limiter.acquire(limits)
            return _login_page(
                app, checked, csrf_token, email=email, status=400, error="Wrong e-mail or password."
            )
        scopes = canonical(set(parse_scope(checked.scope)) & grantable_scopes(app, user.role))
        if not scopes:
            raise RedirectError(
                "invalid_scope",
                "your account cannot grant the requested scopes",
                checked.redirect_uri,
                checked.state,
            )
        await session.commit()
        user_id, user_email = user.id, user.email
    ticket = secrets.token_urlsafe(32)
    granted = AuthorizationRequest(
        checked.client_id, checked.redirect_uri, " ".join(scopes), checked.state, checked.code_challenge
    )
    await runtime.redis.set(
        _ticket_key(ticket), json.dumps({"user_id": str(user_id), **asdict(granted)}), ex=TICKET_SECONDS
    )
    return _page(
        "consent.html",
        app_name=app.name,
        user_email=user_email,
        scopes=_scope_rows(scopes),
        redirect_host=urlsplit(checked.redirect_uri).hostname,
        ticket=ticket,
        csrf_token=csrf_token,
    )


async def _consent(runtime: OAuthRuntime, form: dict[str, str]) -> Response[Any]:
    raw = await runtime.redis.getdel(_ticket_key(form.get("ticket", "")))
    if raw is None:
        raise PageError(
            "This sign-in has expired",
            "The consent page was open too long or was already answered. "
            "Go back to the app and sign in again.",
        )
    ticket = json.loads(raw)
    user_id = uuid.UUID(ticket.pop("user_id"))
    checked = AuthorizationRequest(**ticket)
    base = runtime.settings.base_url
    if form.get("decision") != "approve":
        return _redirect_to(
            checked.redirect_uri,
            error="access_denied",
            error_description="the user declined",
            state=checked.state,
            iss=base,
        )
    async with runtime.sessions() as session:
        app = await session.scalar(select(GptApp).where(GptApp.client_id == checked.client_id))
        user = await session.get(User, user_id)
        if app is None or app.status != AppStatus.ACTIVE or checked.redirect_uri not in app.redirect_uris:
            raise PageError(
                "App unavailable", "This app was suspended or changed while you were signing in.", 403
            )
        if user is None or not user.is_active:
            raise PageError("Account unavailable", "Your account is no longer active.", 403)
        code = await runtime.server.create_authorization_code(
            session,
            app,
            user,
            redirect_uri=checked.redirect_uri,
            scopes=parse_scope(checked.scope),
            code_challenge=checked.code_challenge,
        )
        await session.commit()
    return _redirect_to(checked.redirect_uri, code=code, state=checked.state, iss=base)


def _ticket_key(ticket: str) -> str:
    return f"oauth:consent:{credential_hash(ticket)}"
