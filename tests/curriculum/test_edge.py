"""Remembered curriculum answers are sent before routing (`api.curriculum.edge`), with every guarantee of the
full path: the same body and headers, authentication, scopes, revocation, suspension, rate limits, clean
headers, audit and metrics; and they are forgotten when the curriculum changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.curriculum.cache import CurriculumCache
from api.curriculum.loader import LoadReport
from tests.utils.oauth import TestToken, issue_test_token

Client = AsyncTestClient[Litestar]

PATH = "/api/v1/curriculum/standards/M707"
ROUTE = "/api/v1/curriculum/standards/{code}"


def _cache(app: Litestar) -> CurriculumCache:
    cache: CurriculumCache = app.state.curriculum_cache
    return cache


async def _remember(client: Client, app: Litestar, headers: dict[str, str], path: str = PATH) -> Any:
    """Ask once (the full path, unless already remembered) and check the target is now remembered."""
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    bare, _, query = path.partition("?")
    assert _cache(app).remembered((bare, query.encode())) is not None, "the target was not noted"
    return response


async def _audited(engine: AsyncEngine, client_id: str, count: int) -> list[Any]:
    """The app's audit rows of one client, once its flusher (every second) has written `count`."""
    for _ in range(50):
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        "SELECT operation, status, error, request_id FROM audit_events"
                        " WHERE client_id = :id ORDER BY occurred_at"
                    ),
                    {"id": client_id},
                )
            ).all()
        if len(rows) >= count:
            return list(rows)
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} audit rows of {client_id}, found {len(rows)}")


async def _token(app: Litestar, scopes: list[str] | None = None, **fields: Any) -> TestToken:
    return await issue_test_token(app, scopes or ["curriculum:read"], role="teacher", **fields)


async def test_a_remembered_answer_is_the_full_paths_answer_byte_for_byte(
    client: Client, app: Litestar, curriculum: LoadReport
) -> None:
    token = await _token(app)
    _cache(app).clear()
    full = await _remember(client, app, token.headers)  # through routing and the handler
    edge = await client.get(PATH, headers={**token.headers, "X-Request-ID": "teacher-42"})
    assert edge.status_code == 200
    assert edge.content == full.content
    assert edge.headers["content-type"] == full.headers["content-type"] == "application/json"
    assert int(edge.headers["content-length"]) == len(edge.content)
    assert edge.headers["x-request-id"] == "teacher-42"
    assert len(full.headers["x-request-id"]) == 32
    assert edge.headers["ratelimit-limit"] == full.headers["ratelimit-limit"]
    assert int(edge.headers["ratelimit-remaining"]) == int(full.headers["ratelimit-remaining"]) - 1
    assert sorted(edge.headers.keys()) == sorted(full.headers.keys())


async def test_every_remembered_answer_is_audited_and_counted(
    client: Client, app: Litestar, curriculum: LoadReport, db_engine: AsyncEngine
) -> None:
    token = await _token(app)
    labels = {"method": "GET", "route": ROUTE, "status": "200"}
    before = REGISTRY.get_sample_value("setu_http_requests_total", labels) or 0.0
    await _remember(client, app, token.headers)
    for _ in range(4):
        assert (await client.get(PATH, headers=token.headers)).status_code == 200
    assert REGISTRY.get_sample_value("setu_http_requests_total", labels) == before + 5
    rows = await _audited(db_engine, token.client_id, 5)
    assert len(rows) == 5
    assert {(row.operation, row.status) for row in rows} == {("getStandard", 200)}
    assert len({row.request_id for row in rows}) == 5


async def test_a_revoked_token_is_refused_on_a_remembered_answer(
    client: Client, app: Litestar, curriculum: LoadReport
) -> None:
    token = await _token(app)
    await _remember(client, app, token.headers)
    revoked = await client.post(
        "/oauth/revoke",
        data={"token": token.access_token, "token_type_hint": "access_token"},
        auth=(token.client_id, token.client_secret or ""),
    )
    assert revoked.status_code == 200
    response = await client.get(PATH, headers=token.headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.headers["x-request-id"]


async def test_a_suspended_app_is_refused_on_a_remembered_answer(
    client: Client, app: Litestar, curriculum: LoadReport, admin_headers: dict[str, str]
) -> None:
    token = await _token(app)
    await _remember(client, app, token.headers)
    suspended = await client.post(f"/api/v1/admin/apps/{token.app_id}/suspend", headers=admin_headers)
    assert suspended.status_code == 200
    response = await client.get(PATH, headers=token.headers)
    assert response.status_code == 403
    assert "suspended" in response.json()["detail"]


async def test_rate_limits_hold_on_remembered_answers_and_refusals_are_audited(
    client: Client, app: Litestar, curriculum: LoadReport, db_engine: AsyncEngine
) -> None:
    token = await _token(app, rate_limit_per_minute=3)
    await _remember(client, app, token.headers)
    assert [(await client.get(PATH, headers=token.headers)).status_code for _ in range(2)] == [200, 200]
    refused = await client.get(PATH, headers=token.headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["error"] == "rate_limited"
    statuses = [(row.status, row.error) for row in await _audited(db_engine, token.client_id, 4)]
    assert statuses == [(200, None)] * 3 + [(429, "rate_limited")]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-a-jwt"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ],
)
async def test_no_valid_token_is_401_on_a_remembered_answer(
    client: Client,
    app: Litestar,
    curriculum: LoadReport,
    teacher_headers: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    await _remember(client, app, teacher_headers)
    response = await client.get(PATH, headers=headers)
    assert response.status_code == status
    assert response.headers["www-authenticate"].startswith("Bearer ")


async def test_a_token_without_the_scope_is_403_on_a_remembered_answer(
    client: Client, app: Litestar, curriculum: LoadReport, teacher_headers: dict[str, str]
) -> None:
    await _remember(client, app, teacher_headers)
    other = await _token(app, ["memories:read"])
    response = await client.get(PATH, headers=other.headers)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_a_nul_in_a_header_is_422_on_a_remembered_answer(
    client: Client, app: Litestar, curriculum: LoadReport, teacher_headers: dict[str, str]
) -> None:
    await _remember(client, app, teacher_headers)
    response = await client.get(PATH, headers={**teacher_headers, "X-Note": "a\x00b"})
    assert response.status_code == 422
    assert "NUL" in response.json()["detail"]


async def test_remembered_searches_are_keyed_by_the_exact_query_string(
    client: Client, app: Litestar, curriculum: LoadReport, teacher_headers: dict[str, str]
) -> None:
    ordered = "/api/v1/curriculum/standards?kind=chapter&class=7"
    swapped = "/api/v1/curriculum/standards?class=7&kind=chapter"
    first = await client.get(ordered, headers=teacher_headers)
    second = await client.get(swapped, headers=teacher_headers)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    lists = "/api/v1/curriculum/chapters?class=7&subject=science"
    remembered = await _remember(client, app, teacher_headers, lists)
    assert _cache(app).remembered(("/api/v1/curriculum/chapters", b"class=7&subject=mathematics")) is None
    maths = await client.get(
        "/api/v1/curriculum/chapters?class=7&subject=mathematics", headers=teacher_headers
    )
    assert maths.status_code == 200
    assert maths.content != remembered.content


async def test_refused_and_missing_answers_are_never_remembered(
    client: Client, app: Litestar, curriculum: LoadReport, teacher_headers: dict[str, str]
) -> None:
    cache = _cache(app)
    assert (
        await client.get("/api/v1/curriculum/standards/NOPE999", headers=teacher_headers)
    ).status_code == 404
    assert cache.remembered(("/api/v1/curriculum/standards/NOPE999", b"")) is None
    bad = await client.get("/api/v1/curriculum/chapters?class=13&subject=science", headers=teacher_headers)
    assert bad.status_code == 422
    assert cache.remembered(("/api/v1/curriculum/chapters", b"class=13&subject=science")) is None


async def test_a_curriculum_change_forgets_every_remembered_target(
    client: Client, app: Litestar, curriculum: LoadReport, teacher_headers: dict[str, str]
) -> None:
    await _remember(client, app, teacher_headers)
    cache = _cache(app)
    cache.clear()  # what a curriculum version change does
    assert cache.remembered((PATH, b"")) is None
    await _remember(client, app, teacher_headers)
