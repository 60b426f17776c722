"""The per-process pieces of the authorization server, built once in the app's lifespan (or by the CLI)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from api.accounts.services import Passwords, password_hasher
from api.apps.services import suspended_app_ids
from api.audit.services import AuditLog
from api.lib.ratelimit import RateLimiter
from api.lib.redis import create_redis
from api.lib.settings import Settings
from api.oauth.crypto import SecretBox, key_encryption_secret
from api.oauth.denylist import Denylist
from api.oauth.keys import KeyStore
from api.oauth.models import AuthorizationCode, RefreshToken
from api.oauth.services import AuthorizationServer
from api.oauth.tokens import AccessTokens

log = structlog.get_logger("api.oauth")

MAINTENANCE_SECONDS = 30.0
PREPARE_TIMEOUT_SECONDS = 10.0


def audience_of(settings: Settings) -> str:
    """Who our access tokens are for (`aud`): the `/api/v1` resource server."""
    return f"{settings.base_url}/api/v1"


@dataclass
class OAuthRuntime:
    settings: Settings
    sessions: Callable[[], AsyncSession]
    redis: Redis
    keys: KeyStore
    tokens: AccessTokens
    denylist: Denylist
    limiter: RateLimiter
    audit: AuditLog
    server: AuthorizationServer
    passwords: Passwords

    async def prepare(self) -> None:
        """At start-up: make sure a signing key exists (so the JWKS lists it before the first token). A
        database that cannot be reached yet does not stop the start: `maintain` and the JWKS try again."""
        try:
            kid = await asyncio.wait_for(self.keys.ensure_key(), PREPARE_TIMEOUT_SECONDS)
        except Exception as error:  # readiness reports the database; the service still starts
            log.warning("no signing key at start-up; retrying", error=f"{type(error).__name__}: {error}")
        else:
            log.debug("signing key ready", kid=kid)

    async def maintain(self) -> None:
        """Every 30 s: re-assert suspension markers, reload public keys, purge dead codes and tokens."""
        while True:
            started = time.monotonic()
            try:
                await self.maintain_once()
            except Exception as error:  # keep the loop alive whatever one round hits
                log.warning("oauth maintenance failed", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(max(1.0, MAINTENANCE_SECONDS - (time.monotonic() - started)))

    async def maintain_once(self) -> None:
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
        async with self.sessions() as session, session.begin():
            suspended = await suspended_app_ids(session)
            await session.execute(delete(AuthorizationCode).where(AuthorizationCode.expires_at < cutoff))
            await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < cutoff))
        try:
            await self.denylist.refresh_suspensions(suspended)
        except (RedisError, OSError) as error:
            log.warning("cannot refresh app suspensions in redis", error=str(error))
        await self.keys.ensure_key()  # reloads the public keys; makes the first one if start-up could not


def build_runtime(settings: Settings, sessions: Callable[[], AsyncSession], redis: Redis) -> OAuthRuntime:
    if settings.env == "production" and settings.signing_key_secret is None:
        log.warning(
            "SETU_SIGNING_KEY_SECRET is not set: signing keys are encrypted with a per-host secret file"
        )
    keys = KeyStore(SecretBox(key_encryption_secret(settings)), sessions)
    tokens = AccessTokens(
        keys,
        issuer=settings.base_url,
        audience=audience_of(settings),
        lifetime_seconds=settings.access_token_ttl_minutes * 60,
    )
    denylist = Denylist(redis)
    limiter = RateLimiter(redis, fail_closed=settings.rate_limit_fail_closed)
    return OAuthRuntime(
        settings=settings,
        sessions=sessions,
        redis=redis,
        keys=keys,
        tokens=tokens,
        denylist=denylist,
        limiter=limiter,
        audit=AuditLog(sessions),
        server=AuthorizationServer(settings, keys, tokens, denylist, limiter),
        passwords=Passwords(password_hasher(settings)),
    )


@asynccontextmanager
async def standalone_runtime(settings: Settings) -> AsyncIterator[OAuthRuntime]:
    """A runtime with its own engine and Redis client, for the CLI and for code on another event loop."""
    engine = create_async_engine(settings.async_database_url, poolclass=NullPool)
    redis = create_redis(settings)
    try:
        yield build_runtime(settings, async_sessionmaker(engine, expire_on_commit=False), redis)
    finally:
        await redis.aclose()
        await engine.dispose()


def runtime_of(app: Any) -> OAuthRuntime:
    """The runtime of a started Litestar app (`app.state.oauth`)."""
    runtime: OAuthRuntime | None = getattr(app.state, "oauth", None)
    if runtime is None:
        raise RuntimeError("the app's lifespan has not started: no OAuth runtime yet")
    return runtime
