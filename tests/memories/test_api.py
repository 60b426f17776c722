"""The memory bank as a GPT uses it: store (202), poll the job, recall by meaning, list, forget; isolation."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.lib.serving import ServingClient
from api.lib.settings import Settings
from api.worker import build_worker
from tests.utils import oauth
from tests.utils.oauth import issue_test_token

Client = AsyncTestClient[Litestar]


async def embed_pending(ml_settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Run the real worker (embedding through the serving tier) until no job is due."""
    serving = ServingClient.from_settings(ml_settings)
    try:
        worker = build_worker(ml_settings, sessions, serving)
        while await worker.run_once():
            pass
    finally:
        await serving.aclose()


async def store(client: Client, token: oauth.TestToken, content: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/memories", json={"content": content, **extra}, headers=token.headers
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_stored_memory_is_found_again_by_meaning(
    ml_client: Client, ml_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    token = await issue_test_token(ml_settings, role="student")
    accepted = await store(
        ml_client, token, "I am preparing for the class 10 board exam in science", tags=["goal"]
    )
    assert accepted["status"] == "pending" and accepted["job_id"]
    await store(ml_client, token, "My favourite food is dosa")
    job = await ml_client.get(f"/api/v1/jobs/{accepted['job_id']}", headers=token.headers)
    assert job.status_code == 200 and job.json()["status"] == "queued"
    await embed_pending(ml_settings, sessions)
    job = await ml_client.get(f"/api/v1/jobs/{accepted['job_id']}", headers=token.headers)
    assert job.json()["status"] == "succeeded"
    found = await ml_client.post(
        "/api/v1/memories/search",
        json={"query": "which exam is the student studying for?"},
        headers=token.headers,
    )
    assert found.status_code == 200
    items = found.json()["items"]
    assert items[0]["id"] == accepted["id"]
    assert items[0]["score"] > items[1]["score"]
    tagged = await ml_client.post(
        "/api/v1/memories/search", json={"query": "food", "tags": ["goal"]}, headers=token.headers
    )
    assert [i["id"] for i in tagged.json()["items"]] == [accepted["id"]]


async def test_memories_of_one_user_are_invisible_to_another_user_and_another_app(
    ml_client: Client, ml_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    owner = await issue_test_token(ml_settings, role="student")
    classmate = await issue_test_token(ml_settings, role="student", app_id=owner.app_id)
    other_app = await issue_test_token(ml_settings, role="student", user_id=owner.user_id)
    memory = await store(ml_client, owner, "My roll number is 42 and I struggle with fractions")
    await embed_pending(ml_settings, sessions)
    for stranger in (classmate, other_app):
        assert (
            await ml_client.get(f"/api/v1/memories/{memory['id']}", headers=stranger.headers)
        ).status_code == 404
        assert (
            await ml_client.delete(f"/api/v1/memories/{memory['id']}", headers=stranger.headers)
        ).status_code == 404
        assert (
            await ml_client.get(f"/api/v1/jobs/{memory['job_id']}", headers=stranger.headers)
        ).status_code == 404
        listed = await ml_client.get("/api/v1/memories", headers=stranger.headers)
        assert listed.json()["items"] == []
        found = await ml_client.post(
            "/api/v1/memories/search", json={"query": "fractions"}, headers=stranger.headers
        )
        assert found.json()["items"] == []
    mine = await ml_client.get(f"/api/v1/memories/{memory['id']}", headers=owner.headers)
    assert mine.status_code == 200 and mine.json()["status"] == "ready"


async def test_idempotency_key_makes_a_retry_return_the_same_memory(
    ml_client: Client, ml_settings: Settings
) -> None:
    token = await issue_test_token(ml_settings)
    headers = {**token.headers, "Idempotency-Key": "retry-123"}
    first = await ml_client.post("/api/v1/memories", json={"content": "likes maps"}, headers=headers)
    again = await ml_client.post("/api/v1/memories", json={"content": "likes maps"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    listed = await ml_client.get("/api/v1/memories", headers=token.headers)
    assert len(listed.json()["items"]) == 1
    changed = await ml_client.post("/api/v1/memories", json={"content": "likes rivers"}, headers=headers)
    assert changed.status_code == 422
    assert "Idempotency-Key" in changed.json()["detail"]


async def test_limits_and_bad_input_are_clear_errors(ml_client: Client, ml_settings: Settings) -> None:
    token = await issue_test_token(ml_settings)
    too_long = await ml_client.post("/api/v1/memories", json={"content": "x" * 9000}, headers=token.headers)
    assert too_long.status_code == 413
    assert "8000" in too_long.json()["detail"]
    empty = await ml_client.post("/api/v1/memories", json={"content": ""}, headers=token.headers)
    assert empty.status_code == 422
    sneaky = await ml_client.post(
        "/api/v1/memories", json={"content": "hi", "user_id": "someone-else"}, headers=token.headers
    )
    assert sneaky.status_code == 422
    assert "user_id" in sneaky.json()["detail"]


async def test_writing_needs_memories_write_and_reading_needs_memories_read(
    ml_client: Client, ml_settings: Settings
) -> None:
    reader = await issue_test_token(ml_settings, scopes=["memories:read"])
    refused = await ml_client.post("/api/v1/memories", json={"content": "x"}, headers=reader.headers)
    assert refused.status_code == 403
    writer = await issue_test_token(ml_settings, scopes=["memories:write"])
    assert (await ml_client.get("/api/v1/memories", headers=writer.headers)).status_code == 403


async def test_delete_forgets_a_memory(
    ml_client: Client, ml_settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    token = await issue_test_token(ml_settings)
    memory = await store(ml_client, token, "temporary note")
    assert (
        await ml_client.delete(f"/api/v1/memories/{memory['id']}", headers=token.headers)
    ).status_code == 204
    assert (await ml_client.get(f"/api/v1/memories/{memory['id']}", headers=token.headers)).status_code == 404
    await embed_pending(ml_settings, sessions)  # the orphaned job finishes without error
    job = await ml_client.get(f"/api/v1/jobs/{memory['job_id']}", headers=token.headers)
    assert job.json()["status"] == "succeeded"
    assert job.json()["result"]["skipped"] == "memory was deleted"
    await asyncio.sleep(0)
