"""A NUL byte or a lone surrogate anywhere in a request is a 422 naming the field, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.lib.cleantext import bad_text, find_bad
from api.lib.settings import Settings
from tests.utils.oauth import issue_test_token, register_test_app, run_setu

Client = AsyncTestClient[Litestar]


def assert_refused(response: Any, field: str, source: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == 422 and body["title"] == "Invalid input"
    assert field in body["detail"], body["detail"]
    assert body["errors"][0]["source"] == source
    return body


async def _count(sessions: async_sessionmaker[AsyncSession], table: str) -> int:
    async with sessions() as session:
        query = text(f"SELECT count(*) FROM {table}")  # noqa: S608 (our own fixed table names)
        return int((await session.execute(query)).scalar_one())


def test_the_check_finds_nul_and_lone_surrogates_only() -> None:
    assert bad_text("नमस्ते, class 10 é 😀") is None
    assert bad_text("bad \x00 byte") == "a NUL byte (U+0000)"
    assert bad_text("half \ud83d pair") == "a lone surrogate (U+D83D)"
    assert find_bad({"a": [1, {"b": "x\x00"}]}) == ("a[1].b", "a NUL byte (U+0000)")
    assert find_bad({"m": {"k\x00": 1}}) == ("m.'k\\x00' (a key)", "a NUL byte (U+0000)")
    assert find_bad({"a": ["fine", 2, None, True]}) is None


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/curriculum/classes?board=CB%00SE", "board"),
        ("/api/v1/curriculum/standards?q=photo%00synthesis", "q"),
        ("/api/v1/curriculum/standards?q=plants&subject=sci%00", "subject"),
        ("/api/v1/memories?tag=goal%00", "tag"),
    ],
)
async def test_a_nul_in_a_query_parameter_is_a_422(
    client: Client, teacher_headers: dict[str, str], url: str, field: str
) -> None:
    assert_refused(await client.get(url, headers=teacher_headers), field, "query")


async def test_a_nul_in_a_path_parameter_is_a_422(client: Client, teacher_headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/curriculum/standards/SCI%0010", headers=teacher_headers)
    assert_refused(response, "code", "path")


async def test_a_nul_in_a_header_is_a_422_and_writes_nothing(
    client: Client, teacher_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    response = await client.post(
        "/api/v1/memories",
        json={"content": "fine"},
        headers={**teacher_headers, "Idempotency-Key": "key\x00one"},
    )
    assert_refused(response, "idempotency-key", "header")
    assert await _count(sessions, "memories") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"content": "bad \\u0000 byte"}', "content"),
        (b'{"content": "half \\ud83d pair"}', "content"),
        (b'{"content": "ok", "metadata": {"bad\\u0000key": 1}}', "(a key)"),
        (b'{"content": "ok", "metadata": {"nested": ["x", "y\\u0000"]}}', "metadata.nested[1]"),
        (b'{"content": "ok", "tags": ["\\udc80"]}', "tags[0]"),
    ],
)
async def test_a_nul_or_surrogate_in_a_json_body_is_a_422_and_no_memory_is_stored(
    client: Client,
    teacher_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    body: bytes,
    field: str,
) -> None:
    response = await client.post(
        "/api/v1/memories", content=body, headers={**teacher_headers, "Content-Type": "application/json"}
    )
    assert_refused(response, field, "body")
    assert await _count(sessions, "memories") == 0
    assert await _count(sessions, "jobs") == 0
    listed = await client.get("/api/v1/memories", headers=teacher_headers)
    assert listed.status_code == 200 and listed.json()["items"] == []


async def test_a_clean_escaped_body_still_works(client: Client, teacher_headers: dict[str, str]) -> None:
    response = await client.post(
        "/api/v1/memories",
        content=b'{"content": "likes \\u0926\\u094b\\u0938\\u093e \\ud83d\\ude00 and a \\\\u0000 literal"}',
        headers={**teacher_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text


async def test_oauth_form_posts_with_a_nul_are_a_422_with_oauth_error_fields(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    app, secret = await register_test_app(
        settings, grant_types=["client_credentials"], scopes=["curriculum:read"]
    )
    before = await _count(sessions, "oauth_tokens") if await _has_table(sessions, "oauth_tokens") else None
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": secret,
            "scope": "curriculum:read\x00",
        },
    )
    body = assert_refused(response, "scope", "body")
    assert body["error"] == "invalid_request"
    for path in ("/oauth/revoke", "/oauth/introspect"):
        response = await client.post(path, data={"token": "a\x00b", "client_id": app.client_id})
        assert_refused(response, "token", "body")
    if before is not None:
        assert await _count(sessions, "oauth_tokens") == before
    # The same credentials without the NUL still work.
    ok = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": secret,
            "scope": "curriculum:read",
        },
    )
    assert ok.status_code == 200, ok.text


async def _has_table(sessions: async_sessionmaker[AsyncSession], name: str) -> bool:
    async with sessions() as session:
        found = await session.execute(text("SELECT to_regclass(:name)"), {"name": name})
        return found.scalar_one() is not None


async def test_an_app_token_is_refused_the_same_way(client: Client, settings: Settings) -> None:
    token = await issue_test_token(settings, client_credentials=True)
    response = await client.get("/api/v1/curriculum/subjects?class=1%000", headers=token.headers)
    assert_refused(response, "class", "query")


async def test_the_cli_refuses_the_same_text(settings: Settings) -> None:
    result = await run_setu(
        settings,
        "users",
        "create",
        "--email",
        "a\x00b@example.test",
        "--role",
        "teacher",
        "--generate-password",
    )
    assert result.exit_code == 2, result.output
    assert "NUL byte" in result.output and "email" in result.output
    result = await run_setu(
        settings,
        "users",
        "create",
        "--email",
        "a\udc80b@example.test",
        "--role",
        "teacher",
        "--generate-password",
    )
    assert result.exit_code == 2 and "lone surrogate" in result.output


async def test_json_bodies_are_typed_strictly(client: Client, admin_headers: dict[str, str]) -> None:
    """Litestar converts leniently (`0` to False, `"5"` to 5); the spec calls those invalid, and so do we."""
    user = "00000000-0000-0000-0000-000000000000"
    response = await client.patch(f"/api/v1/admin/users/{user}", json={"is_active": 0}, headers=admin_headers)
    body = assert_refused(response, "is_active", "body")
    assert "Expected `bool`, got `int`" in body["detail"]
    response = await client.post(
        "/api/v1/memories/search", json={"query": "x", "limit": "5"}, headers=admin_headers
    )
    assert_refused(response, "limit", "body")
    # JSON Schema's integers include 5.0, and so do ours.
    response = await client.post(
        "/api/v1/memories", json={"content": "x", "tags": ["a"]}, headers=admin_headers
    )
    assert response.status_code == 202, response.text
    response = await client.get("/api/v1/memories?limit=5", headers=admin_headers)
    assert response.status_code == 200
