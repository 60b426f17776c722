"""JWT signing keys (ES256): stored in PostgreSQL with the private half encrypted, cached in memory.

Issuing asks the database which key is current (one indexed read inside the issuing transaction), so every
worker switches to a new key as soon as `setu keys rotate` commits. Verifying never touches the database on
the hot path: public keys are cached by `kid` and reloaded only for an unknown `kid` (at most once a second)
or by the maintenance loop. A retired key stays published until the last token it signed has expired.

The first key is made at start-up (`ensure_key`, from the app's lifespan), so the JWKS lists it before any
token is issued: a resource server that caches the JWKS when it starts accepts the first token too.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Callable
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.oauth.crypto import SecretBox
from api.oauth.denylist import MAX_ACCESS_TOKEN_SECONDS
from api.oauth.models import SigningKey

ALGORITHM = "ES256"
_CURVE = "P-256"
_ADVISORY_LOCK = 0x5E7A_0001  # serialises key creation and rotation across workers and the CLI
_UNKNOWN_KID_RELOAD_SECONDS = 1.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class KeyStore:
    """The current private key for signing and every published public key for verifying."""

    def __init__(self, box: SecretBox, sessions: Callable[[], AsyncSession]) -> None:
        self._box = box
        self._sessions = sessions
        self._signing: ECKey | None = None
        self._public: dict[str, tuple[ECKey, float | None]] = {}
        """kid -> (public key, publish_until as a UNIX time or None while it still signs)."""
        self._last_unknown_reload = 0.0
        self._reload_lock = asyncio.Lock()

    async def signing_key(self, session: AsyncSession) -> ECKey:
        """The key to sign with now; creates the first key when there is none."""
        kid = await session.scalar(_current_kid())
        if kid is None:
            await session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _ADVISORY_LOCK})
            kid = await session.scalar(_current_kid()) or await self._create(session)
        if self._signing is None or self._signing.kid != kid:
            row = await session.get_one(SigningKey, kid)
            private = ECKey.import_key(json.loads(self._box.open(row.private_jwk_encrypted)))
            self._public[kid] = (ECKey.import_key(row.public_jwk), None)
            self._signing = private
        return self._signing

    async def ensure_key(self) -> str:
        """The current signing key's kid, made now when there is none, and the public cache reloaded.

        Several workers starting at once make one key: creation holds the advisory lock and looks again."""
        async with self._sessions() as session, session.begin():
            kid = await session.scalar(_current_kid())
            if kid is None:
                await session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _ADVISORY_LOCK})
                kid = await session.scalar(_current_kid()) or await self._create(session)
        await self.reload()
        return str(kid)

    async def rotate(self, session: AsyncSession) -> tuple[str, list[str]]:
        """Start signing with a new key; the old ones stay published until their tokens expire.

        Returns the new kid and the retired kids. Keys whose publication ended a day ago are deleted.
        """
        await session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _ADVISORY_LOCK})
        now = _now()
        retired = (
            await session.scalars(
                update(SigningKey)
                .where(SigningKey.retired_at.is_(None))
                .values(
                    retired_at=now,
                    publish_until=now + datetime.timedelta(seconds=MAX_ACCESS_TOKEN_SECONDS + 60),
                )
                .returning(SigningKey.kid)
            )
        ).all()
        await session.execute(
            delete(SigningKey).where(SigningKey.publish_until < now - datetime.timedelta(days=1))
        )
        kid = await self._create(session)
        return kid, list(retired)

    async def published(self, session: AsyncSession) -> list[dict[str, Any]]:
        """The public JWKs to publish: current keys, and retired ones whose tokens may still be valid."""
        rows = (await session.scalars(_published())).all()
        return [row.public_jwk for row in rows]

    async def verification_key(self, kid: str) -> ECKey | None:
        """The public key for `kid`, or None when unknown or no longer published."""
        entry = self._public.get(kid)
        if entry is None and time.monotonic() - self._last_unknown_reload >= _UNKNOWN_KID_RELOAD_SECONDS:
            # A forged token can carry any kid: at most one database read a second on their account.
            self._last_unknown_reload = time.monotonic()
            await self.reload()
            entry = self._public.get(kid)
        if entry is None:
            return None
        key, until = entry
        if until is not None and time.time() > until:
            return None
        return key

    async def reload(self) -> None:
        """Replace the cached public keys with what the database publishes now."""
        async with self._reload_lock:
            async with self._sessions() as session:
                rows = (await session.scalars(_published())).all()
            self._public = {
                row.kid: (
                    ECKey.import_key(row.public_jwk),
                    row.publish_until.timestamp() if row.publish_until is not None else None,
                )
                for row in rows
            }

    async def _create(self, session: AsyncSession) -> str:
        key = ECKey.generate_key(_CURVE, auto_kid=True)
        kid = str(key.kid)
        public = {**key.as_dict(private=False), "use": "sig", "alg": ALGORITHM}
        sealed = self._box.seal(json.dumps(key.as_dict(private=True)).encode())
        session.add(SigningKey(kid=kid, algorithm=ALGORITHM, public_jwk=public, private_jwk_encrypted=sealed))
        await session.flush()
        return kid


def _current_kid() -> Any:
    return (
        select(SigningKey.kid)
        .where(SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc(), SigningKey.kid)
        .limit(1)
    )


def _published() -> Any:
    return (
        select(SigningKey)
        .where((SigningKey.publish_until.is_(None)) | (SigningKey.publish_until > func.now()))
        .order_by(SigningKey.created_at.desc())
    )
