"""What Redis remembers so that a signed, unexpired access token can still be refused: revoked token ids,
revoked grants (a whole token family) and blocked (suspended or deleted) apps.

Every key carries the app id as its hash tag, so the rate limiter checks them together with the app's
limits in one script call on the hot path (`api.oauth.guards`).
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

MAX_ACCESS_TOKEN_SECONDS = 3600
"""The longest access-token lifetime any configuration allows; markers live at least this long."""
SUSPENSION_MARKER_SECONDS = 120
"""A suspension marker expires unless refreshed (`refresh_suspensions`), so a missed resume heals itself."""


def token_key(app_id: uuid.UUID | str, jti: str) -> str:
    return f"oauth:{{{app_id}}}:jti:{jti}"


def grant_key(app_id: uuid.UUID | str, grant_id: uuid.UUID | str) -> str:
    return f"oauth:{{{app_id}}}:grant:{grant_id}"


def app_blocked_key(app_id: uuid.UUID | str) -> str:
    return f"oauth:{{{app_id}}}:blocked"


class Denylist:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def revoke_token(self, app_id: uuid.UUID | str, jti: str, seconds_left: int) -> None:
        """Refuse one access token (by `jti`) until it would have expired anyway."""
        if seconds_left > 0:
            await self.redis.set(token_key(app_id, jti), b"1", ex=seconds_left + 5)

    async def revoke_grants(self, app_id: uuid.UUID | str, grant_ids: list[uuid.UUID]) -> None:
        """Refuse every access token issued within these grants (token families)."""
        if grant_ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for grant_id in grant_ids:
                    pipe.set(grant_key(app_id, grant_id), b"1", ex=MAX_ACCESS_TOKEN_SECONDS + 60)
                await pipe.execute()

    async def block_app(self, app_id: uuid.UUID | str, *, deleted: bool = False) -> None:
        """Refuse every token of the app now: for a while (suspension, refreshed) or until they expire."""
        seconds = MAX_ACCESS_TOKEN_SECONDS + 60 if deleted else SUSPENSION_MARKER_SECONDS
        await self.redis.set(app_blocked_key(app_id), b"deleted" if deleted else b"suspended", ex=seconds)

    async def unblock_app(self, app_id: uuid.UUID | str) -> None:
        await self.redis.delete(app_blocked_key(app_id))

    async def refresh_suspensions(self, app_ids: list[uuid.UUID]) -> None:
        """Re-assert the markers of the apps the database says are suspended (after a Redis restart too)."""
        if app_ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for app_id in app_ids:
                    pipe.set(app_blocked_key(app_id), b"suspended", ex=SUSPENSION_MARKER_SECONDS)
                await pipe.execute()
