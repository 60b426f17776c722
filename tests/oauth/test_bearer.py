"""Every `/api/v1` request: bearer JWT verified locally, revocation and suspension, rate limits, scopes."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from litestar import Litestar, Request, get
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.lib.settings import Settings
from api.oauth.guards import API_PREFIX, Principal, requires_any_scope, requires_scope, scope_of
from api.oauth.runtime import standalone_runtime
from tests.utils.oauth import TestToken, issue_test_token

Client = AsyncTestClient[Litestar]


@get("/api/v1/probe/whoami", operation_id="probeWhoAmI", guards=[requires_scope("curriculum:read")])
async def whoami(request: Request[Principal, Any, Any]) -> dict[str, Any]:
    principal = request.user
    return {
        "app_id": str(principal.app_id),
        "client_id": principal.client_id,
        "user_id": str(principal.user_id) if principal.user_id else None,
        "scopes": sorted(principal.scopes),
        "token_id": principal.token_id,
    }


@get(
    "/api/v1/probe/either",
    operation_id="probeEither",
    guards=[requires_any_scope("memories:read", "content:generate")],
)
async def either() -> dict[str, str]:
    return {"status": "ok"}


PROBE = "/api/v1/probe/whoami"


def _probe_app(settings: Settings) -> Litestar:
    app = create_app(settings)
    app.register(whoami)
    app.register(either)
    return app


@pytest.fixture(scope="module")
async def probe(settings: Settings) -> AsyncIterator[Client]:
    """A client of an app with one extra route guarded by `curriculum:read`."""
    async with AsyncTestClient(app=_probe_app(settings)) as client:
        yield client


@pytest.fixture
def probe_app(probe: Client) -> Litestar:
    return probe.app


async def _signed(settings: Settings, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A JWT signed with our real current signing key (to test the claim checks, not the signature)."""
    async with standalone_runtime(settings) as runtime, runtime.sessions() as session, session.begin():
        key = await runtime.keys.signing_key(session)
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **(header or {})}, claims, key)


def _claims(settings: Settings, token: TestToken, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": settings.base_url,
        "sub": str(token.user_id),
        "aud": f"{settings.base_url}/api/v1",
        "client_id": token.client_id,
        "scope": "curriculum:read",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 900,
        "app": str(token.app_id),
        "sid": str(uuid.uuid4()),
        "rl": [100, 100],
    }
    claims.update(changes)
    return claims


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_token_reaches_the_route_as_a_principal(probe: Client, probe_app: Litestar) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read", "memories:read"], role="teacher")
    response = await probe.get(PROBE, headers=token.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["app_id"] == str(token.app_id)
    assert body["client_id"] == token.client_id
    assert body["user_id"] == str(token.user_id)
    assert body["scopes"] == ["curriculum:read", "memories:read"]
    assert response.headers["ratelimit-limit"]
    assert response.headers["ratelimit-remaining"]


async def test_a_client_credentials_token_has_no_user(probe: Client, probe_app: Litestar) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"], client_credentials=True)
    body = (await probe.get(PROBE, headers=token.headers)).json()
    assert body["user_id"] is None


async def test_missing_token_is_401_with_a_bearer_challenge(probe: Client) -> None:
    response = await probe.get(PROBE)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="shikshasetu"'
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_garbage_token_is_401_invalid_token(probe: Client) -> None:
    response = await probe.get(PROBE, headers=_bearer("not-a-jwt"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_expired_access_token_is_401(probe: Client, probe_app: Litestar, settings: Settings) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    expired = await _signed(
        settings, _claims(settings, token, iat=int(time.time()) - 2000, exp=int(time.time()) - 5)
    )
    response = await probe.get(PROBE, headers=_bearer(expired))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_alg_none_token_is_401(probe: Client, probe_app: Litestar, settings: Settings) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    unsigned = f"{part({'alg': 'none', 'typ': 'at+jwt'})}.{part(_claims(settings, token))}."
    response = await probe.get(PROBE, headers=_bearer(unsigned))
    assert response.status_code == 401
    assert "algorithm" in response.json()["detail"]


async def test_token_signed_by_another_key_under_our_kid_is_401(
    probe: Client, probe_app: Litestar, settings: Settings
) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    real_kid = json.loads(base64.urlsafe_b64decode(token.access_token.split(".")[0] + "=="))["kid"]
    forged = jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": real_kid},
        _claims(settings, token),
        ECKey.generate_key("P-256"),
    )
    response = await probe.get(PROBE, headers=_bearer(forged))
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]


async def test_token_signed_by_an_unknown_key_is_401(
    probe: Client, probe_app: Litestar, settings: Settings
) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    stranger = ECKey.generate_key("P-256", auto_kid=True)
    forged = jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": stranger.kid}, _claims(settings, token), stranger
    )
    response = await probe.get(PROBE, headers=_bearer(forged))
    assert response.status_code == 401
    assert "unknown key" in response.json()["detail"]


async def test_token_for_another_audience_is_401(
    probe: Client, probe_app: Litestar, settings: Settings
) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    other = await _signed(settings, _claims(settings, token, aud="https://other.example/api"))
    response = await probe.get(PROBE, headers=_bearer(other))
    assert response.status_code == 401
    assert "audience" in response.json()["detail"]


async def test_token_from_another_issuer_is_401(
    probe: Client, probe_app: Litestar, settings: Settings
) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    other = await _signed(settings, _claims(settings, token, iss="https://issuer.example"))
    assert (await probe.get(PROBE, headers=_bearer(other))).status_code == 401


async def test_a_jwt_that_is_not_an_access_token_is_401(
    probe: Client, probe_app: Litestar, settings: Settings
) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    id_token = await _signed(settings, _claims(settings, token), header={"typ": "JWT"})
    response = await probe.get(PROBE, headers=_bearer(id_token))
    assert response.status_code == 401
    assert "at+jwt" in response.json()["detail"]


async def test_insufficient_scope_is_403(probe: Client, probe_app: Litestar) -> None:
    token = await issue_test_token(probe_app, ["memories:read"])
    response = await probe.get(PROBE, headers=token.headers)
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert 'scope="curriculum:read"' in response.headers["www-authenticate"]


async def test_student_token_cannot_reach_the_admin_api(
    client: Client, student_headers: dict[str, str]
) -> None:
    response = await client.get("/api/v1/admin/apps", headers=student_headers)
    assert response.status_code == 403


async def test_revoked_access_token_is_401(probe: Client, probe_app: Litestar) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    assert (await probe.get(PROBE, headers=token.headers)).status_code == 200
    revoked = await probe.post(
        "/oauth/revoke",
        data={"token": token.access_token, "token_type_hint": "access_token"},
        auth=(token.client_id, token.client_secret or ""),
    )
    assert revoked.status_code == 200
    response = await probe.get(PROBE, headers=token.headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


async def test_suspended_app_is_refused_at_once_and_resuming_restores_it(
    probe: Client, probe_app: Litestar, admin_headers: dict[str, str]
) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    assert (
        await probe.post(f"/api/v1/admin/apps/{token.app_id}/suspend", headers=admin_headers)
    ).status_code == 200
    refused = await probe.get(PROBE, headers=token.headers)
    assert refused.status_code == 403
    assert "suspended" in refused.json()["detail"]
    assert (
        await probe.post(f"/api/v1/admin/apps/{token.app_id}/resume", headers=admin_headers)
    ).status_code == 200
    assert (await probe.get(PROBE, headers=token.headers)).status_code == 200


async def test_a_deleted_apps_tokens_stop_working(
    probe: Client, probe_app: Litestar, admin_headers: dict[str, str]
) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"])
    assert (
        await probe.delete(f"/api/v1/admin/apps/{token.app_id}", headers=admin_headers)
    ).status_code == 204
    assert (await probe.get(PROBE, headers=token.headers)).status_code == 403


async def test_rate_limit_exceeded_is_429_with_retry_after_and_ratelimit_headers(
    probe: Client, probe_app: Litestar
) -> None:
    token = await issue_test_token(probe_app, ["curriculum:read"], rate_limit_per_minute=3)
    remaining = [
        (await probe.get(PROBE, headers=token.headers)).headers["ratelimit-remaining"] for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]
    refused = await probe.get(PROBE, headers=token.headers)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) > 0
    assert refused.json()["limit"] == "app"
    assert 'setu_rate_limit_rejections_total{limit="app"}' in (await probe.get("/metrics")).text


async def test_the_user_limit_applies_per_user_within_one_app(probe: Client, probe_app: Litestar) -> None:
    first = await issue_test_token(probe_app, ["curriculum:read"], user_rate_limit_per_minute=2)
    second = await issue_test_token(probe_app, ["curriculum:read"], app_id=first.app_id)
    assert [(await probe.get(PROBE, headers=first.headers)).status_code for _ in range(3)] == [200, 200, 429]
    assert (await probe.get(PROBE, headers=second.headers)).status_code == 200


async def test_the_limit_is_shared_across_two_app_instances_on_one_redis(
    probe_app: Litestar, settings: Settings
) -> None:
    """Two separate apps (as two workers or two hosts would be) on one Redis enforce one limit."""
    token = await issue_test_token(probe_app, ["curriculum:read"], rate_limit_per_minute=4)
    async with (
        AsyncTestClient(app=_probe_app(settings)) as one,
        AsyncTestClient(app=_probe_app(settings)) as two,
    ):
        statuses = [(await client.get(PROBE, headers=token.headers)).status_code for client in (one, two) * 3]
    assert statuses == [200, 200, 200, 200, 429, 429]


async def test_every_api_route_declares_its_scope(app: Litestar, client: Client) -> None:
    guarded = {}
    for route in app.routes:
        if not route.path.startswith(API_PREFIX):
            continue
        for handler in getattr(route, "route_handlers", ()):
            if handler.http_methods == {"OPTIONS"}:  # Litestar's automatic OPTIONS answer
                continue
            # A scope guard, or a custom guard that declares its scope in `opt["scope"]`.
            declared = scope_of(handler) or (handler.opt.get("scope") if handler.resolve_guards() else None)
            guarded[f"{route.path} {sorted(handler.http_methods)}"] = (declared, handler.opt.get("scope"))
    assert guarded, "no /api/v1 routes found"
    missing = [name for name, (scope, _) in guarded.items() if scope is None]
    assert not missing, f"routes without a scope guard (requires_scope(...)): {missing}"
    assert all(scope == recorded for scope, recorded in guarded.values())


async def test_openapi_documents_the_oauth2_flows_and_each_routes_scope(
    client: Client, settings: Settings
) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    flows = schema["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["authorizationCode"]["authorizationUrl"] == f"{settings.base_url}/oauth/authorize"
    assert flows["authorizationCode"]["tokenUrl"] == f"{settings.base_url}/oauth/token"
    assert set(flows["clientCredentials"]["scopes"]) == {
        "curriculum:read",
        "memories:read",
        "memories:write",
        "content:generate",
        "admin",
    }
    assert schema["paths"]["/api/v1/admin/users"]["get"]["security"] == [{"oauth2": ["admin"]}]


async def test_refusals_carry_the_request_id_and_are_counted_with_their_status(probe: Client) -> None:
    refused = await probe.get(PROBE, headers={"X-Request-ID": "req-401-check"})
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "req-401-check"
    metrics = (await probe.get("/metrics")).text
    assert 'route="/api/v1/probe/whoami",status="401"' in metrics


async def test_a_route_may_accept_any_one_of_several_scopes(probe: Client, probe_app: Litestar) -> None:
    for scopes, status in ((["content:generate"], 200), (["memories:read"], 200), (["curriculum:read"], 403)):
        token = await issue_test_token(probe_app, scopes)
        assert (await probe.get("/api/v1/probe/either", headers=token.headers)).status_code == status, scopes
    handler = next(h for r in probe_app.routes if r.path == "/api/v1/probe/either" for h in r.route_handlers)
    assert handler.opt["scope"] == "memories:read content:generate"
    assert handler.security == [{"oauth2": ["memories:read"]}, {"oauth2": ["content:generate"]}]
