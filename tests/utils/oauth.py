"""Real users, real GPT apps and real access tokens for tests, minted by the app's own token service."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from click.testing import CliRunner, Result
from litestar import Litestar

from api.accounts.services import create_user
from api.apps.schemas import AppCreate, AppRead
from api.apps.services import create_app, get_app, to_read
from api.cli import setu_group
from api.lib.settings import Settings, get_settings
from api.oauth.runtime import runtime_of, standalone_runtime
from api.oauth.scopes import ADMIN_SCOPE, DEFAULT_APP_SCOPES, SCOPES

CALLBACK = "https://chatgpt.com/aip/g-test/oauth/callback"
ALL_SCOPES = list(SCOPES)
TEST_PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class TestToken:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    headers: dict[str, str]
    """`{"Authorization": "Bearer <access token>"}`."""
    user_id: uuid.UUID | None
    app_id: uuid.UUID
    client_id: str
    access_token: str
    client_secret: str | None = None
    """Only when this call created the app."""


async def issue_test_token(
    app: Litestar | Settings,
    scopes: Sequence[str] | None = None,
    role: str = "student",
    *,
    app_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    client_credentials: bool = False,
    rate_limit_per_minute: int | None = None,
    user_rate_limit_per_minute: int | None = None,
) -> TestToken:
    """Create (or reuse) a GPT app and an end user in the database and mint an access token for them.

    `app` is a started Litestar app (use the `client` fixture) or the settings of a server running elsewhere.
    `scopes` defaults to every non-admin scope, plus `admin` for `role="admin"`. Pass `app_id` to add a user
    to an existing app, `user_id` to give an existing user a token in another app, `client_credentials=True`
    for an app-level token with no user. The token is signed by the app's real token service and key.
    """
    settings = app if isinstance(app, Settings) else runtime_of(app).settings
    if scopes is None:
        scopes = [*DEFAULT_APP_SCOPES, ADMIN_SCOPE] if role == "admin" else list(DEFAULT_APP_SCOPES)
    unknown = set(scopes) - set(SCOPES)
    assert not unknown, f"unknown scopes {unknown}"
    async with standalone_runtime(settings) as runtime:
        secret = None
        async with runtime.sessions() as session:
            if app_id is None:
                gpt_app, secret = await create_app(
                    session,
                    settings,
                    AppCreate(
                        name=f"Test GPT {uuid.uuid4().hex[:6]}",
                        redirect_uris=[CALLBACK],
                        scopes=ALL_SCOPES,  # type: ignore[arg-type]
                        grant_types=["authorization_code", "refresh_token", "client_credentials"],
                        rate_limit_per_minute=rate_limit_per_minute,
                        user_rate_limit_per_minute=user_rate_limit_per_minute,
                    ),
                )
            else:
                gpt_app = await get_app(session, app_id)
            if user_id is None and not client_credentials:
                user, _ = await create_user(
                    session,
                    runtime.passwords,
                    email=f"{role}-{uuid.uuid4().hex[:10]}@example.test",
                    role=role,
                    password=TEST_PASSWORD,
                )
                user_id = user.id
            response = await runtime.server.issue_tokens(
                session,
                gpt_app,
                None if client_credentials else user_id,
                list(scopes),
                uuid.uuid4(),
                refresh=False,
            )
    return TestToken(
        headers={"Authorization": f"Bearer {response.access_token}"},
        user_id=None if client_credentials else user_id,
        app_id=gpt_app.id,
        client_id=gpt_app.client_id,
        access_token=response.access_token,
        client_secret=secret,
    )


async def create_test_user(
    settings: Settings, role: str = "teacher", *, email: str | None = None, password: str = TEST_PASSWORD
) -> tuple[uuid.UUID, str]:
    """A real user with a known password; returns its id and e-mail."""
    email = email or f"{role}-{uuid.uuid4().hex[:10]}@example.test"
    async with standalone_runtime(settings) as runtime, runtime.sessions() as session, session.begin():
        user, _ = await create_user(session, runtime.passwords, email=email, role=role, password=password)
        return user.id, user.email


async def register_test_app(settings: Settings, **fields: Any) -> tuple[AppRead, str | None]:
    """A real GPT app (default: a confidential, ChatGPT-like client on `CALLBACK`) and its secret."""
    fields.setdefault("name", f"Test GPT {uuid.uuid4().hex[:6]}")
    fields.setdefault("redirect_uris", [CALLBACK])
    async with standalone_runtime(settings) as runtime, runtime.sessions() as session, session.begin():
        app, secret = await create_app(session, settings, AppCreate(**fields))
        return to_read(app), secret


_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def hidden_fields(html: str) -> dict[str, str]:
    """The hidden inputs of our sign-in and consent forms."""
    return {name: unescape(value) for name, value in _HIDDEN.findall(html)}


async def sign_in(
    http: httpx.AsyncClient,
    url: str,
    email: str,
    password: str = TEST_PASSWORD,
    *,
    decision: str = "approve",
) -> httpx.Response:
    """Drive the sign-in and consent pages with plain form posts; returns the final redirect (303)."""
    parts = urlsplit(url)
    action = f"{parts.scheme}://{parts.netloc}/oauth/authorize" if parts.netloc else "/oauth/authorize"
    page = await http.get(url)
    assert page.status_code == 200, page.text
    consent = await http.post(action, data={**hidden_fields(page.text), "email": email, "password": password})
    assert consent.status_code == 200, consent.text
    return await http.post(
        action, data={**hidden_fields(consent.text), "decision": decision}, follow_redirects=False
    )


def authorize_url(client_id: str, scope: str, *, base: str = "", **extra: str) -> str:
    """`/oauth/authorize?...` for a code request to `CALLBACK` (override with `redirect_uri=`)."""
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "scope": scope}
    query.update(extra)
    return f"{base}/oauth/authorize?{urlencode(query)}"


async def authorization_code(
    http: httpx.AsyncClient, client_id: str, email: str, scope: str, *, base: str = "", **extra: str
) -> str:
    """A fresh authorization code, obtained by signing in and consenting."""
    final = await sign_in(http, authorize_url(client_id, scope, base=base, state="st", **extra), email)
    return redirect_params(final)["code"]


def redirect_params(response: httpx.Response) -> dict[str, str]:
    """The query parameters of a redirect's Location."""
    assert response.status_code == 303, response.text
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))


async def run_setu(settings: Settings, *args: str, input: str | None = None) -> Result:
    """Run a `setu` command in this process against the test database and Redis. It runs on a worker
    thread because the command starts its own event loop."""
    env = {
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "SETU_DATA_DIR": str(settings.data_dir),
        "SETU_ENV": settings.env,
    }

    def invoke() -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(setu_group(), list(args), env=env, input=input)
        finally:
            get_settings.cache_clear()

    return await asyncio.to_thread(invoke)
