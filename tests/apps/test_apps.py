"""GPT apps: the admin apps API and `setu apps ...` (table and `--json`)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.apps.models import GptApp
from api.audit.services import AuditLog
from api.lib.settings import Settings
from tests.utils.oauth import CALLBACK, run_setu

Client = AsyncTestClient[Litestar]
CHATGPT_LEGACY = "https://chat.openai.com/aip/g-test/oauth/callback"


def _json(output: str) -> Any:
    return json.loads(output[output.index(next(c for c in output if c in "[{")) :])


async def test_admin_api_creates_an_app_and_shows_the_secret_only_once(
    client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await client.post(
        "/api/v1/admin/apps",
        json={"name": "Class 7 Science GPT", "redirect_uris": [CALLBACK, CHATGPT_LEGACY]},
        headers=admin_headers,
    )
    assert created.status_code == 201
    body = created.json()
    secret, app = body["client_secret"], body["app"]
    assert secret.startswith("setu_cs_") and app["client_id"].startswith("setu_app_")
    assert app["scopes"] == ["curriculum:read", "memories:read", "memories:write", "content:generate"]
    assert app["token_endpoint_auth_methods"] == ["client_secret_basic", "client_secret_post"]
    assert app["require_pkce"] is False
    shown = await client.get(f"/api/v1/admin/apps/{app['id']}", headers=admin_headers)
    assert secret not in shown.text and '"client_secret"' not in shown.text
    async with sessions() as session:
        stored = await session.get_one(GptApp, uuid.UUID(app["id"]))
    assert stored.client_secret_hash == hashlib.sha256(secret.encode()).hexdigest()


async def test_redirect_uris_must_be_exact_https_urls(client: Client, admin_headers: dict[str, str]) -> None:
    for bad in (
        "http://chatgpt.com/aip/g-1/oauth/callback",
        "https://*.chatgpt.com/cb",
        "https://x.example/cb#frag",
    ):
        response = await client.post(
            "/api/v1/admin/apps", json={"name": "Bad", "redirect_uris": [bad]}, headers=admin_headers
        )
        assert response.status_code == 422, bad
    local = await client.post(
        "/api/v1/admin/apps",
        json={"name": "Local", "redirect_uris": ["http://127.0.0.1:8765/cb"]},
        headers=admin_headers,
    )
    assert local.status_code == 201


async def test_the_code_grant_needs_a_redirect_uri(client: Client, admin_headers: dict[str, str]) -> None:
    response = await client.post("/api/v1/admin/apps", json={"name": "No callback"}, headers=admin_headers)
    assert response.status_code == 422
    assert "redirect URI" in response.json()["detail"]


async def test_resetting_the_secret_invalidates_the_old_one(
    client: Client, admin_headers: dict[str, str]
) -> None:
    created = (
        await client.post(
            "/api/v1/admin/apps",
            json={"name": "Server app", "grant_types": ["client_credentials"]},
            headers=admin_headers,
        )
    ).json()
    app_id, client_id, old = created["app"]["id"], created["app"]["client_id"], created["client_secret"]
    reset = await client.post(f"/api/v1/admin/apps/{app_id}/reset-secret", headers=admin_headers)
    new = reset.json()["client_secret"]
    assert new != old
    token = {"grant_type": "client_credentials"}
    assert (await client.post("/oauth/token", data=token, auth=(client_id, old))).status_code == 401
    assert (await client.post("/oauth/token", data=token, auth=(client_id, new))).status_code == 200


async def test_updating_an_app_changes_callbacks_scopes_and_limits(
    client: Client, admin_headers: dict[str, str]
) -> None:
    app = (
        await client.post(
            "/api/v1/admin/apps", json={"name": "GPT", "redirect_uris": [CALLBACK]}, headers=admin_headers
        )
    ).json()["app"]
    updated = await client.patch(
        f"/api/v1/admin/apps/{app['id']}",
        json={
            "redirect_uris": [CALLBACK, CHATGPT_LEGACY],
            "scopes": ["curriculum:read"],
            "rate_limit_per_minute": 30,
        },
        headers=admin_headers,
    )
    assert updated.status_code == 200
    body = updated.json()
    assert body["redirect_uris"] == [CALLBACK, CHATGPT_LEGACY]
    assert (body["scopes"], body["rate_limit_per_minute"]) == (["curriculum:read"], 30)
    unknown = await client.patch(
        f"/api/v1/admin/apps/{app['id']}", json={"scopes": ["everything"]}, headers=admin_headers
    )
    assert unknown.status_code in (400, 422)


async def test_the_apps_api_needs_the_admin_scope(client: Client, teacher_headers: dict[str, str]) -> None:
    assert (await client.get("/api/v1/admin/apps", headers=teacher_headers)).status_code == 403


async def test_setu_apps_commands_manage_an_app_end_to_end(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await run_setu(
        settings,
        "apps",
        "create",
        "--name",
        "Maths Helper",
        "--redirect-uri",
        CALLBACK,
        "--rate-limit",
        "120",
    )
    assert created.exit_code == 0, created.output
    assert "client secret" in created.output and "setu_cs_" in created.output
    client_id = next(line.split()[-1] for line in created.output.splitlines() if line.startswith("client id"))

    listed = await run_setu(settings, "apps", "list", "--json")
    assert [app["client_id"] for app in _json(listed.output)] == [client_id]
    assert "Maths Helper" in (await run_setu(settings, "apps", "list")).output

    updated = await run_setu(
        settings, "apps", "update", client_id, "--add-redirect-uri", CHATGPT_LEGACY, "--json"
    )
    assert _json(updated.output)["redirect_uris"] == [CALLBACK, CHATGPT_LEGACY]

    suspended = await run_setu(settings, "apps", "suspend", client_id)
    assert "is now suspended" in suspended.output
    assert (
        _json((await run_setu(settings, "apps", "show", client_id, "--json")).output)["status"] == "suspended"
    )
    assert "is now active" in (await run_setu(settings, "apps", "resume", client_id)).output

    reset = await run_setu(settings, "apps", "reset-secret", client_id, "--json")
    assert _json(reset.output)["client_secret"].startswith("setu_cs_")

    app_id = uuid.UUID(_json(listed.output)[0]["id"])
    log = AuditLog(sessions)
    for latency in (10.0, 20.0, 30.0):
        log.record("api", "searchStandards", 200, latency, app_id=app_id)
    log.record("api", "searchStandards", 500, 40.0, app_id=app_id)
    await log.flush()
    stats = _json((await run_setu(settings, "apps", "stats", client_id, "--since", "1h", "--json")).output)
    assert (stats["calls"], stats["errors"], stats["error_rate"]) == (4, 1, 0.25)
    assert stats["operations"][0]["operation"] == "searchStandards"
    table = (await run_setu(settings, "apps", "stats", client_id)).output
    assert "searchStandards" in table and "25.0%" in table

    deleted = await run_setu(settings, "apps", "delete", client_id, "--yes")
    assert deleted.exit_code == 0 and "audit history is kept" in deleted.output
    missing = await run_setu(settings, "apps", "show", client_id)
    assert missing.exit_code == 1 and "No GPT app" in missing.output


async def test_setu_apps_create_refuses_bad_input_with_a_message(settings: Settings) -> None:
    result = await run_setu(
        settings, "apps", "create", "--name", "Bad", "--redirect-uri", "http://evil.example/cb"
    )
    assert result.exit_code == 1
    assert "https" in result.output
    window = await run_setu(settings, "apps", "stats", "setu_app_x", "--since", "soon")
    assert window.exit_code == 2 and "--since" in window.output
