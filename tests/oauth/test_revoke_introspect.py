"""Revocation (RFC 7009) and introspection (RFC 7662), for the calling app's own tokens only."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.lib.settings import Settings
from tests.utils.oauth import (
    CALLBACK,
    authorization_code,
    create_test_user,
    issue_test_token,
    register_test_app,
)

Client = AsyncTestClient[Litestar]


async def _code_grant(client: Client, settings: Settings) -> tuple[str, str, dict]:
    app, secret = await register_test_app(settings, scopes=["curriculum:read", "admin"])
    _, email = await create_test_user(settings, role="admin")
    code = await authorization_code(client, app.client_id, email, "admin")
    issued = await client.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
        auth=(app.client_id, secret or ""),
    )
    return app.client_id, secret or "", issued.json()


async def test_introspection_describes_an_active_access_token(client: Client, app: Litestar) -> None:
    token = await issue_test_token(app, ["curriculum:read", "memories:read"], role="teacher")
    answer = await client.post(
        "/oauth/introspect",
        data={"token": token.access_token},
        auth=(token.client_id, token.client_secret or ""),
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["active"] is True
    assert body["client_id"] == token.client_id
    assert body["sub"] == str(token.user_id)
    assert body["scope"] == "curriculum:read memories:read"
    assert body["exp"] > body["iat"]
    assert answer.headers["cache-control"] == "no-store"


async def test_introspection_of_a_refresh_token(client: Client, settings: Settings) -> None:
    client_id, secret, issued = await _code_grant(client, settings)
    body = (
        await client.post(
            "/oauth/introspect", data={"token": issued["refresh_token"]}, auth=(client_id, secret)
        )
    ).json()
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"


async def test_introspection_of_a_revoked_access_token_is_inactive(client: Client, app: Litestar) -> None:
    token = await issue_test_token(app, ["curriculum:read"])
    auth = (token.client_id, token.client_secret or "")
    assert (
        await client.post("/oauth/revoke", data={"token": token.access_token}, auth=auth)
    ).status_code == 200
    body = (await client.post("/oauth/introspect", data={"token": token.access_token}, auth=auth)).json()
    assert body == {"active": False}


async def test_introspection_of_another_apps_token_is_inactive(client: Client, app: Litestar) -> None:
    mine = await issue_test_token(app, ["curriculum:read"])
    theirs = await issue_test_token(app, ["curriculum:read"])
    body = (
        await client.post(
            "/oauth/introspect",
            data={"token": theirs.access_token},
            auth=(mine.client_id, mine.client_secret or ""),
        )
    ).json()
    assert body == {"active": False}


async def test_introspection_requires_client_authentication(client: Client, app: Litestar) -> None:
    token = await issue_test_token(app, ["curriculum:read"])
    anonymous = await client.post("/oauth/introspect", data={"token": token.access_token})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"


async def test_revoking_a_refresh_token_revokes_its_grant(client: Client, settings: Settings) -> None:
    client_id, secret, issued = await _code_grant(client, settings)
    bearer = {"Authorization": f"Bearer {issued['access_token']}"}
    assert (await client.get("/api/v1/admin/users", headers=bearer)).status_code == 200
    revoked = await client.post(
        "/oauth/revoke",
        data={"token": issued["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(client_id, secret),
    )
    assert revoked.status_code == 200
    refresh = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        auth=(client_id, secret),
    )
    assert refresh.json()["error"] == "invalid_grant"
    assert (await client.get("/api/v1/admin/users", headers=bearer)).status_code == 401


async def test_revocation_answers_200_for_unknown_tokens(client: Client, app: Litestar) -> None:
    token = await issue_test_token(app, ["curriculum:read"])
    auth = (token.client_id, token.client_secret or "")
    for unknown in ("setu_rt_unknown", "not-a-token", "a.b.c"):
        assert (await client.post("/oauth/revoke", data={"token": unknown}, auth=auth)).status_code == 200


async def test_an_app_cannot_revoke_another_apps_token(client: Client, app: Litestar) -> None:
    mine = await issue_test_token(app, ["curriculum:read", "admin"], role="admin")
    theirs = await issue_test_token(app, ["curriculum:read", "admin"], role="admin")
    answer = await client.post(
        "/oauth/revoke", data={"token": theirs.access_token}, auth=(mine.client_id, mine.client_secret or "")
    )
    assert answer.status_code == 200
    assert (await client.get("/api/v1/admin/users", headers=theirs.headers)).status_code == 200


async def test_revocation_requires_client_authentication(client: Client, app: Litestar) -> None:
    token = await issue_test_token(app, ["curriculum:read"])
    answer = await client.post(
        "/oauth/revoke", data={"token": token.access_token}, auth=(token.client_id, "wrong")
    )
    assert answer.status_code == 401
