"""An admin credential is enough to drive the service over HTTP (what `make loadtest HOST=...` needs): an
admin app's client credentials, or an administrator's e-mail and password through the built-in public
client `setu-admin-tools` (PKCE, loopback callback, scope `admin` only)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.apps.models import GptApp
from api.apps.services import ADMIN_TOOLS_CLIENT_ID, ensure_admin_tools_app
from api.lib.settings import Settings
from loadtests.service import AdminCredential, ServiceError, admin_token, bearer
from tests.oauth.conftest import LiveServer
from tests.utils.oauth import TEST_PASSWORD, create_test_user, register_test_app


def _admin_call(base_url: str, credential: AdminCredential) -> int:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        token = admin_token(http, credential)
        return http.get("/api/v1/admin/users", headers=bearer(token)).status_code


async def test_an_admins_email_and_password_get_an_admin_token(live_server: LiveServer) -> None:
    _, email = await create_test_user(live_server.settings, role="admin")
    credential = AdminCredential(email=email, password=TEST_PASSWORD)
    assert await asyncio.to_thread(_admin_call, live_server.base_url, credential) == 200
    # a second sign-in reuses the client registered by the first
    assert await asyncio.to_thread(_admin_call, live_server.base_url, credential) == 200


async def test_a_teacher_cannot_sign_in_through_the_admin_tools_client(live_server: LiveServer) -> None:
    _, email = await create_test_user(live_server.settings, role="teacher")
    with pytest.raises(ServiceError, match="sign-in"):
        await asyncio.to_thread(
            _admin_call, live_server.base_url, AdminCredential(email=email, password=TEST_PASSWORD)
        )


async def test_an_admin_apps_client_credentials_get_an_admin_token(live_server: LiveServer) -> None:
    app, secret = await register_test_app(
        live_server.settings, scopes=["admin"], grant_types=["client_credentials"], redirect_uris=[]
    )
    assert secret is not None
    credential = AdminCredential(client_id=app.client_id, client_secret=secret)
    assert await asyncio.to_thread(_admin_call, live_server.base_url, credential) == 200


def test_a_credential_is_an_app_or_a_person() -> None:
    with pytest.raises(ValueError, match="admin"):
        AdminCredential()
    with pytest.raises(ValueError, match="admin"):
        AdminCredential(client_id="a", client_secret="b", email="c", password="d")


async def test_concurrent_first_uses_register_the_client_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async def ensure() -> str:
        async with sessions() as session:
            return (await ensure_admin_tools_app(session, settings)).client_id

    assert set(await asyncio.gather(*(ensure() for _ in range(4)))) == {ADMIN_TOOLS_CLIENT_ID}
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(GptApp).where(GptApp.client_id == ADMIN_TOOLS_CLIENT_ID)
        )
        app = await session.scalar(select(GptApp).where(GptApp.client_id == ADMIN_TOOLS_CLIENT_ID))
    assert count == 1 and app is not None
    assert (app.client_type, app.scopes, app.require_pkce) == ("public", ["admin"], True)
