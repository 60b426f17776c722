"""Users: argon2id hashes, `setu users create`, and the admin users API (scope `admin`)."""

from __future__ import annotations

import json
import uuid

from argon2 import PasswordHasher
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.accounts.models import User
from api.lib.settings import Settings
from tests.utils.oauth import (
    CALLBACK,
    authorization_code,
    create_test_user,
    issue_test_token,
    register_test_app,
    run_setu,
)

Client = AsyncTestClient[Litestar]


async def test_setu_users_create_generates_a_password_shown_once_and_stores_argon2id(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    result = await run_setu(
        settings,
        "users",
        "create",
        "--email",
        "Asha@School.example",
        "--role",
        "teacher",
        "--generate-password",
    )
    assert result.exit_code == 0, result.output
    password = next(line.split()[-1] for line in result.output.splitlines() if line.startswith("password"))
    assert "will not be shown again" in result.output
    async with sessions() as session:
        user = (await session.scalars(select(User).where(User.email == "asha@school.example"))).one()
    assert user.role == "teacher"
    assert user.password_hash.startswith("$argon2id$")
    assert password not in user.password_hash
    assert PasswordHasher().verify(user.password_hash, password)


async def test_setu_users_create_prompts_for_the_password(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    password = "a long enough password"
    result = await run_setu(
        settings,
        "users",
        "create",
        "--email",
        "ravi@school.example",
        "--role",
        "student",
        "--json",
        input=f"{password}\n{password}\n",
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.output[result.output.index("{") :])
    assert created["generated_password"] is None
    async with sessions() as session:
        user = await session.get_one(User, uuid.UUID(created["user"]["id"]))
    assert PasswordHasher().verify(user.password_hash, password)


async def test_setu_users_create_refuses_a_duplicate_email(settings: Settings) -> None:
    args = ("users", "create", "--email", "dup@school.example", "--role", "student", "--generate-password")
    assert (await run_setu(settings, *args)).exit_code == 0
    again = await run_setu(settings, *args)
    assert again.exit_code == 1
    assert "already exists" in again.output


async def test_admin_api_creates_lists_updates_and_deletes_users(
    client: Client, admin_headers: dict[str, str]
) -> None:
    created = await client.post(
        "/api/v1/admin/users",
        json={"email": "meera@school.example", "role": "student"},
        headers=admin_headers,
    )
    assert created.status_code == 201
    body = created.json()
    assert len(body["generated_password"]) >= 16
    assert "password_hash" not in created.text
    user_id = body["user"]["id"]

    listed = (
        await client.get("/api/v1/admin/users", params={"role": "student"}, headers=admin_headers)
    ).json()
    assert [item["email"] for item in listed["items"]] == ["meera@school.example"]

    updated = await client.patch(
        f"/api/v1/admin/users/{user_id}", json={"role": "teacher", "name": "Meera"}, headers=admin_headers
    )
    assert (updated.json()["role"], updated.json()["name"]) == ("teacher", "Meera")

    assert (await client.delete(f"/api/v1/admin/users/{user_id}", headers=admin_headers)).status_code == 204
    assert (await client.get(f"/api/v1/admin/users/{user_id}", headers=admin_headers)).status_code == 404


async def test_a_duplicate_email_is_409(client: Client, admin_headers: dict[str, str]) -> None:
    body = {"email": "same@school.example", "role": "teacher"}
    assert (await client.post("/api/v1/admin/users", json=body, headers=admin_headers)).status_code == 201
    again = await client.post(
        "/api/v1/admin/users", json={**body, "email": "SAME@school.example"}, headers=admin_headers
    )
    assert again.status_code == 409


async def test_a_create_body_cannot_carry_fields_a_caller_may_not_set(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/admin/users",
        json={"email": "x@school.example", "role": "student", "password_hash": "$argon2id$forged"},
        headers=admin_headers,
    )
    assert response.status_code == 422


async def test_deactivating_a_user_revokes_their_grants(
    client: Client, app: Litestar, settings: Settings, admin_headers: dict[str, str]
) -> None:
    gpt, secret = await register_test_app(settings, scopes=["curriculum:read", "admin"])
    user_id, email = await create_test_user(settings, role="admin")
    code = await authorization_code(client, gpt.client_id, email, "admin")
    issued = (
        await client.post(
            "/oauth/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
            auth=(gpt.client_id, secret or ""),
        )
    ).json()
    bearer = {"Authorization": f"Bearer {issued['access_token']}"}
    assert (await client.get("/api/v1/admin/users", headers=bearer)).status_code == 200
    off = await client.patch(
        f"/api/v1/admin/users/{user_id}", json={"is_active": False}, headers=admin_headers
    )
    assert off.status_code == 200
    assert (await client.get("/api/v1/admin/users", headers=bearer)).status_code == 401
    refresh = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        auth=(gpt.client_id, secret or ""),
    )
    assert refresh.json()["error"] == "invalid_grant"


async def test_an_admin_cannot_delete_or_deactivate_their_own_account(client: Client, app: Litestar) -> None:
    token = await issue_test_token(app, role="admin")
    assert (
        await client.delete(f"/api/v1/admin/users/{token.user_id}", headers=token.headers)
    ).status_code == 409
    demoted = await client.patch(
        f"/api/v1/admin/users/{token.user_id}", json={"role": "student"}, headers=token.headers
    )
    assert demoted.status_code == 409


async def test_the_users_api_needs_the_admin_scope(client: Client, teacher_headers: dict[str, str]) -> None:
    assert (await client.get("/api/v1/admin/users", headers=teacher_headers)).status_code == 403
    assert (await client.get("/api/v1/admin/users")).status_code == 401
