"""The authorization and token endpoints refuse what RFC 6749, RFC 7636 and RFC 9700 say to refuse."""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.lib.settings import Settings
from api.oauth.models import AuthorizationCode, RefreshToken
from api.oauth.runtime import standalone_runtime
from tests.utils.oauth import (
    CALLBACK,
    authorization_code,
    authorize_url,
    create_test_user,
    hidden_fields,
    register_test_app,
    sign_in,
)

Client = AsyncTestClient[Litestar]


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def _exchange(client: Client, client_id: str, secret: str | None, code: str, **extra: str) -> dict:
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, **extra},
        auth=(client_id, secret or ""),
    )
    return {"status": response.status_code, **response.json()}


async def _admin_setup(client: Client, settings: Settings) -> tuple[str, str, str]:
    """An app allowed `admin`, an admin user, and a fresh code for them: (client_id, secret, code)."""
    app, secret = await register_test_app(settings, scopes=["curriculum:read", "admin"])
    _, email = await create_test_user(settings, role="admin")
    code = await authorization_code(client, app.client_id, email, "admin")
    return app.client_id, secret or "", code


# The authorization endpoint


async def test_unregistered_redirect_uri_is_shown_on_our_page_and_never_redirected(
    client: Client, settings: Settings
) -> None:
    app, _ = await register_test_app(settings)
    response = await client.get(
        authorize_url(
            app.client_id, "curriculum:read", redirect_uri="https://chatgpt.com/aip/g-other/oauth/callback"
        ),
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "not a registered callback" in response.text
    assert response.headers["content-type"].startswith("text/html")


async def test_a_redirect_uri_differing_only_by_a_trailing_slash_is_not_registered(
    client: Client, settings: Settings
) -> None:
    app, _ = await register_test_app(settings)
    response = await client.get(
        authorize_url(app.client_id, "curriculum:read", redirect_uri=CALLBACK + "/"), follow_redirects=False
    )
    assert response.status_code == 400
    assert "location" not in response.headers


async def test_unknown_client_id_is_shown_on_our_page(client: Client) -> None:
    response = await client.get(authorize_url("setu_app_nobody", "curriculum:read"), follow_redirects=False)
    assert response.status_code == 400
    assert "No app with this client_id" in response.text


async def test_other_authorization_errors_go_back_to_the_callback_with_the_state(
    client: Client, settings: Settings
) -> None:
    app, _ = await register_test_app(settings, scopes=["curriculum:read"])
    response = await client.get(authorize_url(app.client_id, "admin", state="xyz"), follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    assert "error=invalid_scope" in location and "state=xyz" in location


async def test_pkce_is_required_when_the_app_demands_it(client: Client, settings: Settings) -> None:
    app, _ = await register_test_app(settings, require_pkce=True)
    response = await client.get(
        authorize_url(app.client_id, "curriculum:read", state="s"), follow_redirects=False
    )
    assert response.status_code == 303
    assert "error=invalid_request" in response.headers["location"]


async def test_plain_pkce_is_refused(client: Client, settings: Settings) -> None:
    app, _ = await register_test_app(settings)
    url = authorize_url(
        app.client_id, "curriculum:read", code_challenge="a" * 43, code_challenge_method="plain", state="s"
    )
    response = await client.get(url, follow_redirects=False)
    assert "error=invalid_request" in response.headers["location"]


async def test_sign_in_form_without_the_csrf_cookie_is_refused(client: Client, settings: Settings) -> None:
    app, _ = await register_test_app(settings)
    _, email = await create_test_user(settings)
    client.cookies.clear()
    response = await client.post(
        "/oauth/authorize",
        data={
            "step": "login",
            "csrf_token": "forged-token-forged-token-forged-token",
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": CALLBACK,
            "email": email,
            "password": "correct horse battery staple",
        },
    )
    assert response.status_code == 403
    assert "session has expired" in response.text


async def test_a_consent_ticket_cannot_be_used_twice(client: Client, settings: Settings) -> None:
    app, _ = await register_test_app(settings)
    _, email = await create_test_user(settings)
    page = await client.get(authorize_url(app.client_id, "curriculum:read", state="s"))
    consent = await client.post(
        "/oauth/authorize",
        data={**hidden_fields(page.text), "email": email, "password": "correct horse battery staple"},
    )
    approve = {**hidden_fields(consent.text), "decision": "approve"}
    assert (await client.post("/oauth/authorize", data=approve, follow_redirects=False)).status_code == 303
    again = await client.post("/oauth/authorize", data=approve, follow_redirects=False)
    assert again.status_code == 400
    assert "expired" in again.text


async def test_failed_sign_ins_are_limited_per_email(client: Client, settings: Settings) -> None:
    app, _ = await register_test_app(settings)
    _, email = await create_test_user(settings)
    page = await client.get(authorize_url(app.client_id, "curriculum:read", state="s"))
    form = {**hidden_fields(page.text), "email": email, "password": "wrong password!"}
    statuses = [(await client.post("/oauth/authorize", data=form)).status_code for _ in range(11)]
    assert statuses[:10] == [400] * 10
    assert statuses[10] == 429
    right = await client.post("/oauth/authorize", data={**form, "password": "correct horse battery staple"})
    assert right.status_code == 429, "the limit holds even for the right password"


# The token endpoint


async def test_authorization_code_cannot_be_used_twice_and_reuse_revokes_its_tokens(
    client: Client, settings: Settings
) -> None:
    client_id, secret, code = await _admin_setup(client, settings)
    first = await _exchange(client, client_id, secret, code)
    assert first["status"] == 200
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    assert (await client.get("/api/v1/admin/users", headers=bearer)).status_code == 200

    second = await _exchange(client, client_id, secret, code)
    assert second["status"] == 400
    assert second["error"] == "invalid_grant"
    assert (await client.get("/api/v1/admin/users", headers=bearer)).status_code == 401
    refreshed = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(client_id, secret),
    )
    assert refreshed.json()["error"] == "invalid_grant"


async def test_expired_authorization_code_is_refused(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client_id, secret, code = await _admin_setup(client, settings)
    async with sessions() as session, session.begin():
        await session.execute(
            update(AuthorizationCode).values(
                expires_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
            )
        )
    answer = await _exchange(client, client_id, secret, code)
    assert answer["status"] == 400
    assert answer["error"] == "invalid_grant"
    assert "expired" in answer["error_description"]


async def test_codes_live_at_most_sixty_seconds(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await _admin_setup(client, settings)
    async with sessions() as session:
        row = (await session.scalars(select(AuthorizationCode))).one()
    assert row.expires_at - row.created_at <= datetime.timedelta(seconds=60)


async def test_pkce_verifier_mismatch_is_refused_and_spends_the_code(
    client: Client, settings: Settings
) -> None:
    app, secret = await register_test_app(settings)
    _, email = await create_test_user(settings)
    verifier = secrets.token_urlsafe(48)
    code = await authorization_code(
        client,
        app.client_id,
        email,
        "curriculum:read",
        code_challenge=_s256(verifier),
        code_challenge_method="S256",
    )
    wrong = await _exchange(client, app.client_id, secret, code, code_verifier=secrets.token_urlsafe(48))
    assert wrong["status"] == 400 and wrong["error"] == "invalid_grant"
    assert "code_verifier" in wrong["error_description"]
    right_but_late = await _exchange(client, app.client_id, secret, code, code_verifier=verifier)
    assert right_but_late["error"] == "invalid_grant"


async def test_missing_pkce_verifier_is_refused_when_a_challenge_was_sent(
    client: Client, settings: Settings
) -> None:
    app, secret = await register_test_app(settings)
    _, email = await create_test_user(settings)
    code = await authorization_code(
        client,
        app.client_id,
        email,
        "curriculum:read",
        code_challenge=_s256("v" * 50),
        code_challenge_method="S256",
    )
    answer = await _exchange(client, app.client_id, secret, code)
    assert answer["error"] == "invalid_grant"


async def test_wrong_client_secret_is_invalid_client_with_a_basic_challenge(
    client: Client, settings: Settings
) -> None:
    client_id, _, code = await _admin_setup(client, settings)
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
        auth=(client_id, "setu_cs_wrong"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_wrong_client_secret_in_the_body_is_invalid_client(client: Client, settings: Settings) -> None:
    client_id, _, code = await _admin_setup(client, settings)
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "client_id": client_id,
            "client_secret": "setu_cs_wrong",
        },
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_repeated_client_authentication_failures_are_limited_with_retry_after(
    client: Client, settings: Settings
) -> None:
    app, secret = await register_test_app(settings, grant_types=["client_credentials"], redirect_uris=[])
    form = {"grant_type": "client_credentials"}
    for _ in range(settings.client_auth_failure_limit):
        assert (
            await client.post("/oauth/token", data=form, auth=(app.client_id, "wrong"))
        ).status_code == 401
    limited = await client.post("/oauth/token", data=form, auth=(app.client_id, secret or ""))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert limited.headers["ratelimit-remaining"] == "0"
    metrics = (await client.get("/metrics")).text
    assert 'setu_rate_limit_rejections_total{limit="client_auth"}' in metrics
    assert "setu_oauth_client_auth_failures_total" in metrics


async def test_token_request_redirect_uri_must_match_the_authorization_request(
    client: Client, settings: Settings
) -> None:
    client_id, secret, code = await _admin_setup(client, settings)
    answer = await _exchange(
        client, client_id, secret, code, redirect_uri="https://chat.openai.com/aip/g-x/oauth/callback"
    )
    assert answer["error"] == "invalid_grant"


async def test_a_code_cannot_be_redeemed_by_another_app(client: Client, settings: Settings) -> None:
    _, _, code = await _admin_setup(client, settings)
    other, other_secret = await register_test_app(settings)
    answer = await _exchange(client, other.client_id, other_secret, code)
    assert answer["error"] == "invalid_grant"


async def test_refresh_token_reuse_revokes_the_family(client: Client, settings: Settings) -> None:
    client_id, secret, code = await _admin_setup(client, settings)
    first = await _exchange(client, client_id, secret, code)

    async def refresh(token: str) -> dict:
        response = await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": token},
            auth=(client_id, secret),
        )
        return {"status": response.status_code, **response.json()}

    second = await refresh(first["refresh_token"])
    assert second["status"] == 200
    replayed = await refresh(first["refresh_token"])
    assert replayed["status"] == 400 and replayed["error"] == "invalid_grant"
    assert (await refresh(second["refresh_token"]))["error"] == "invalid_grant", "the whole family is revoked"
    for access_token in (first["access_token"], second["access_token"]):
        denied = await client.get("/api/v1/admin/users", headers={"Authorization": f"Bearer {access_token}"})
        assert denied.status_code == 401


async def test_refresh_tokens_are_stored_hashed(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client_id, secret, code = await _admin_setup(client, settings)
    issued = await _exchange(client, client_id, secret, code)
    async with sessions() as session:
        stored = (await session.scalars(select(RefreshToken.token_hash))).all()
    assert stored == [hashlib.sha256(issued["refresh_token"].encode()).hexdigest()]


async def test_a_refresh_may_narrow_but_not_widen_the_scopes(client: Client, settings: Settings) -> None:
    app, secret = await register_test_app(settings, scopes=["curriculum:read", "memories:read"])
    _, email = await create_test_user(settings)
    code = await authorization_code(client, app.client_id, email, "curriculum:read")
    issued = await _exchange(client, app.client_id, secret, code)
    widened = await client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": issued["refresh_token"],
            "scope": "memories:read",
        },
        auth=(app.client_id, secret or ""),
    )
    assert widened.json()["error"] == "invalid_scope"


async def test_scope_beyond_the_apps_scopes_is_invalid_scope(client: Client, settings: Settings) -> None:
    app, secret = await register_test_app(
        settings, scopes=["curriculum:read"], grant_types=["client_credentials"], redirect_uris=[]
    )
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        auth=(app.client_id, secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


async def test_grants_the_app_was_not_given_are_unauthorized_client(
    client: Client, settings: Settings
) -> None:
    app, secret = await register_test_app(settings)
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, secret or "")
    )
    assert response.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize(
    "grant_type", ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"]
)
async def test_other_grant_types_are_unsupported(client: Client, settings: Settings, grant_type: str) -> None:
    app, secret = await register_test_app(settings)
    response = await client.post(
        "/oauth/token", data={"grant_type": grant_type}, auth=(app.client_id, secret or "")
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_repeated_parameters_are_invalid_request(client: Client, settings: Settings) -> None:
    app, secret = await register_test_app(settings, grant_types=["client_credentials"], redirect_uris=[])
    response = await client.post(
        "/oauth/token",
        content="grant_type=client_credentials&scope=curriculum:read&scope=admin",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(app.client_id, secret or ""),
    )
    assert response.json()["error"] == "invalid_request"


async def test_token_responses_are_never_cached(client: Client, settings: Settings) -> None:
    app, secret = await register_test_app(settings, grant_types=["client_credentials"], redirect_uris=[])
    issued = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, secret or "")
    )
    refused = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, "x")
    )
    for response in (issued, refused):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"


async def test_a_suspended_app_gets_no_tokens(
    client: Client, settings: Settings, admin_headers: dict[str, str]
) -> None:
    app, secret = await register_test_app(settings, grant_types=["client_credentials"], redirect_uris=[])
    assert (
        await client.post(f"/api/v1/admin/apps/{app.id}/suspend", headers=admin_headers)
    ).status_code == 200
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, secret or "")
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


async def test_denied_consent_issues_no_code(client: Client, settings: Settings) -> None:
    app, _ = await register_test_app(settings)
    _, email = await create_test_user(settings)
    final = await sign_in(
        client, authorize_url(app.client_id, "curriculum:read", state="s"), email, decision="deny"
    )
    assert "error=access_denied" in final.headers["location"]
    assert "code=" not in final.headers["location"]


async def test_an_overlong_parameter_is_refused_on_our_page(client: Client, settings: Settings) -> None:
    app, _ = await register_test_app(settings)
    response = await client.get(
        authorize_url(app.client_id, "curriculum:read", state="s" * 5000), follow_redirects=False
    )
    assert response.status_code == 400
    assert "too long" in response.text


async def test_a_used_refresh_token_is_kept_a_week_to_catch_replays_then_purged(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client_id, secret, code = await _admin_setup(client, settings)
    issued = await _exchange(client, client_id, secret, code)
    rotated = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        auth=(client_id, secret),
    )
    assert rotated.status_code == 200
    used_hash = hashlib.sha256(issued["refresh_token"].encode()).hexdigest()
    async with sessions() as session:
        used = (await session.scalars(select(RefreshToken).where(RefreshToken.token_hash == used_hash))).one()
    assert used.used_at is not None
    assert used.expires_at - used.used_at <= datetime.timedelta(days=7)
    async with sessions() as session, session.begin():
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == used_hash)
            .values(expires_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2))
        )
    async with standalone_runtime(settings) as runtime:
        await runtime.maintain_once()
    async with sessions() as session:
        left = (await session.scalars(select(RefreshToken.token_hash))).all()
    assert used_hash not in left and len(left) == 1
