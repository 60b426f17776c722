"""Signing keys: created on demand, encrypted at rest, rotated with the old public key kept in the JWKS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from api.lib.settings import Settings
from api.oauth.crypto import SecretBox
from api.oauth.models import SigningKey
from api.oauth.runtime import standalone_runtime
from tests.utils.oauth import issue_test_token, run_setu

Client = AsyncTestClient[Litestar]


def _kid(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


async def test_the_first_signing_key_is_created_when_none_exists(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(delete(SigningKey))
    async with standalone_runtime(settings) as runtime, runtime.sessions() as session, session.begin():
        key = await runtime.keys.signing_key(session)
    async with sessions() as session:
        kids = (await session.scalars(select(SigningKey.kid))).all()
    assert kids == [key.kid]


async def test_private_keys_are_stored_encrypted(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with standalone_runtime(settings) as runtime, runtime.sessions() as session, session.begin():
        key = await runtime.keys.signing_key(session)
    async with sessions() as session:
        row = await session.get_one(SigningKey, key.kid)
    private = key.as_dict(private=True)["d"]
    assert private not in row.private_jwk_encrypted
    assert "d" not in row.public_jwk
    assert row.private_jwk_encrypted.startswith("v1.")
    wrong = SecretBox(b"another secret")
    try:
        wrong.open(row.private_jwk_encrypted)
    except ValueError as error:
        assert "SETU_SIGNING_KEY_SECRET" in str(error)
    else:
        raise AssertionError("a different secret decrypted the key")


async def test_rotation_keeps_old_tokens_valid_and_the_old_key_in_the_jwks(
    client: Client, app: Litestar, settings: Settings, admin_headers: dict[str, str]
) -> None:
    old_kid = _kid(admin_headers["Authorization"].removeprefix("Bearer "))
    result = await run_setu(settings, "keys", "rotate", "--json")
    assert result.exit_code == 0, result.output
    rotated = json.loads(result.output)
    assert rotated["retired"] == [old_kid]

    fresh = await issue_test_token(app, role="admin")
    assert _kid(fresh.access_token) == rotated["kid"] != old_kid
    published = [key["kid"] for key in (await client.get("/.well-known/jwks.json")).json()["keys"]]
    assert set(published) >= {old_kid, rotated["kid"]}
    for headers in (admin_headers, fresh.headers):
        assert (await client.get("/api/v1/admin/users", headers=headers)).status_code == 200


async def test_a_fresh_service_publishes_its_key_before_any_token(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """No key at all (a fresh database): starting the app makes one, and the JWKS lists it at once."""
    async with sessions() as session, session.begin():
        await session.execute(delete(SigningKey))
    fresh = create_app(settings)
    async with AsyncTestClient(app=fresh, base_url="http://testserver.local") as http:
        async with sessions() as session:
            kids = (await session.scalars(select(SigningKey.kid))).all()
        assert len(kids) == 1, "the lifespan did not make the first key"
        jwks = (await http.get("/.well-known/jwks.json")).json()
        assert [key["kid"] for key in jwks["keys"]] == kids
        assert all(key["alg"] == "ES256" and "d" not in key for key in jwks["keys"])
        token = await issue_test_token(fresh, role="teacher")
        assert _kid(token.access_token) == kids[0]


async def test_workers_starting_together_make_one_key(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(delete(SigningKey))
    async with contextlib.AsyncExitStack() as stack:
        runtimes = [await stack.enter_async_context(standalone_runtime(settings)) for _ in range(4)]
        kids = await asyncio.gather(*(runtime.keys.ensure_key() for runtime in runtimes))
    async with sessions() as session:
        stored = (await session.scalars(select(SigningKey.kid))).all()
    assert len(set(kids)) == 1 and stored == [kids[0]]


async def test_the_jwks_makes_the_key_when_start_up_could_not(
    client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(delete(SigningKey))
    keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    async with sessions() as session:
        stored = (await session.scalars(select(SigningKey.kid))).all()
    assert [key["kid"] for key in keys] == stored and len(stored) == 1
