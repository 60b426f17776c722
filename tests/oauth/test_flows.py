"""The three grants, end to end, driven by an independent OAuth client (Authlib) against real uvicorn."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.oauth.conftest import LiveServer
from tests.utils.oauth import CALLBACK, create_test_user, register_test_app, sign_in

pytestmark = pytest.mark.usefixtures("insecure_transport")


async def _metadata(live_server: LiveServer) -> dict[str, str]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{live_server.base_url}/.well-known/oauth-authorization-server")).json()


async def _authorize(
    live_server: LiveServer, oauth: AsyncOAuth2Client, email: str, **extra: str
) -> tuple[str, str]:
    """Sign in and consent like a person would; returns the callback URL and the state Authlib chose."""
    metadata = await _metadata(live_server)
    url, state = oauth.create_authorization_url(metadata["authorization_endpoint"], **extra)
    async with httpx.AsyncClient() as browser:
        final = await sign_in(browser, url, email)
    assert final.status_code == 303
    return final.headers["location"], state


@pytest.mark.parametrize("auth_method", ["client_secret_post", "client_secret_basic"])
async def test_authorization_code_flow_with_authlib_calls_a_real_api_route(
    live_server: LiveServer, auth_method: str
) -> None:
    app, secret = await register_test_app(live_server.settings, scopes=["curriculum:read", "admin"])
    _, email = await create_test_user(live_server.settings, role="admin")
    metadata = await _metadata(live_server)
    async with AsyncOAuth2Client(
        app.client_id,
        secret,
        scope="curriculum:read admin",
        redirect_uri=CALLBACK,
        token_endpoint_auth_method=auth_method,
    ) as oauth:
        callback, state = await _authorize(live_server, oauth, email)
        assert callback.startswith(CALLBACK + "?")
        returned = dict(parse_qsl(urlsplit(callback).query))
        assert returned["state"] == state
        assert returned["iss"] == live_server.base_url
        token = await oauth.fetch_token(
            metadata["token_endpoint"], authorization_response=callback, state=state
        )
        assert token["token_type"].lower() == "bearer"
        assert token["scope"] == "curriculum:read admin"
        assert token["refresh_token"].startswith("setu_rt_")
        assert 15 * 60 <= token["expires_in"] <= 60 * 60
        listed = await oauth.get(f"{live_server.base_url}/api/v1/admin/users")
    assert listed.status_code == 200
    assert email in [user["email"] for user in listed.json()["items"]]


async def test_a_tokens_scope_is_enforced_on_a_real_api_route(live_server: LiveServer) -> None:
    app, secret = await register_test_app(live_server.settings, scopes=["curriculum:read", "admin"])
    _, email = await create_test_user(live_server.settings, role="teacher")
    metadata = await _metadata(live_server)
    async with AsyncOAuth2Client(
        app.client_id, secret, scope="curriculum:read admin", redirect_uri=CALLBACK
    ) as oauth:
        callback, state = await _authorize(live_server, oauth, email)
        token = await oauth.fetch_token(
            metadata["token_endpoint"], authorization_response=callback, state=state
        )
        assert token["scope"] == "curriculum:read", "a teacher is never granted admin"
        refused = await oauth.get(f"{live_server.base_url}/api/v1/admin/users")
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]


async def test_refresh_grant_with_authlib_rotates_the_refresh_token(live_server: LiveServer) -> None:
    app, secret = await register_test_app(live_server.settings, scopes=["curriculum:read", "admin"])
    _, email = await create_test_user(live_server.settings, role="admin")
    metadata = await _metadata(live_server)
    async with AsyncOAuth2Client(app.client_id, secret, scope="admin", redirect_uri=CALLBACK) as oauth:
        callback, state = await _authorize(live_server, oauth, email)
        first = await oauth.fetch_token(
            metadata["token_endpoint"], authorization_response=callback, state=state
        )
        second = await oauth.refresh_token(metadata["token_endpoint"], refresh_token=first["refresh_token"])
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert second["scope"] == "admin"
        assert (await oauth.get(f"{live_server.base_url}/api/v1/admin/apps")).status_code == 200


async def test_client_credentials_grant_with_authlib_gives_an_app_token_without_refresh(
    live_server: LiveServer,
) -> None:
    app, secret = await register_test_app(
        live_server.settings,
        scopes=["curriculum:read", "admin"],
        grant_types=["client_credentials"],
        redirect_uris=[],
    )
    metadata = await _metadata(live_server)
    async with AsyncOAuth2Client(app.client_id, secret, scope="admin") as oauth:
        token = await oauth.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
        assert "refresh_token" not in token
        assert token["scope"] == "admin"
        listed = await oauth.get(f"{live_server.base_url}/api/v1/admin/apps")
    assert listed.status_code == 200
    assert app.client_id in [item["client_id"] for item in listed.json()["items"]]


async def test_public_client_completes_the_code_flow_with_pkce_s256(live_server: LiveServer) -> None:
    app, secret = await register_test_app(
        live_server.settings, client_type="public", scopes=["curriculum:read"], redirect_uris=[CALLBACK]
    )
    assert secret is None and app.require_pkce
    _, email = await create_test_user(live_server.settings)
    metadata = await _metadata(live_server)
    verifier = secrets.token_urlsafe(48)
    async with AsyncOAuth2Client(
        app.client_id,
        scope="curriculum:read",
        redirect_uri=CALLBACK,
        token_endpoint_auth_method="none",
        code_challenge_method="S256",
    ) as oauth:
        callback, state = await _authorize(live_server, oauth, email, code_verifier=verifier)
        token = await oauth.fetch_token(
            metadata["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier
        )
    assert token["scope"] == "curriculum:read"


async def test_metadata_lists_real_absolute_endpoints_that_answer(live_server: LiveServer) -> None:
    metadata = await _metadata(live_server)
    base = live_server.base_url
    assert metadata["issuer"] == base
    assert metadata["authorization_endpoint"] == f"{base}/oauth/authorize"
    assert metadata["token_endpoint"] == f"{base}/oauth/token"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert set(metadata["token_endpoint_auth_methods_supported"]) >= {
        "client_secret_basic",
        "client_secret_post",
    }
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(metadata["jwks_uri"])).json()
        assert jwks["keys"] and all(key["alg"] == "ES256" and "d" not in key for key in jwks["keys"])
        for endpoint in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
            answer = await http.post(metadata[endpoint], data={"grant_type": "client_credentials"})
            assert answer.status_code in (400, 401), endpoint
            assert "error" in answer.json()
        assert (await http.get(metadata["authorization_endpoint"])).status_code == 400
