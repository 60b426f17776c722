"""Real users, real GPT apps and real access tokens for tests, minted by the app's own token service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from litestar import Litestar
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from api.accounts.services import create_user
from api.apps.schemas import AppCreate
from api.apps.services import create_app, get_app
from api.lib.settings import Settings
from api.oauth.runtime import OAuthRuntime, build_runtime, runtime_of
from api.oauth.scopes import ADMIN_SCOPE, DEFAULT_APP_SCOPES, SCOPES

CALLBACK = "https://chatgpt.com/aip/g-test/oauth/callback"
ALL_SCOPES = list(SCOPES)
TEST_PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class TestToken:
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
    async with oauth_runtime(settings) as runtime:
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


@asynccontextmanager
async def oauth_runtime(settings: Settings) -> AsyncIterator[OAuthRuntime]:
    """The authorization server's objects on the caller's event loop (the test client runs the app on its
    own loop, whose connections cannot be shared), on the same database, Redis and signing keys."""
    engine = create_async_engine(settings.async_database_url, poolclass=NullPool)
    redis = Redis.from_url(settings.redis_url or "")
    try:
        yield build_runtime(settings, async_sessionmaker(engine, expire_on_commit=False), redis)
    finally:
        await redis.aclose()
        await engine.dispose()
