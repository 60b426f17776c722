"""Curriculum answers come from memory, and a change to the curriculum tables reaches them within the
check interval (every write bumps `curriculum_version`)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.curriculum.cache import ANSWERED_KEY, CurriculumCache
from api.curriculum.loader import LoadReport, embed_missing
from api.curriculum.services import StandardFilters
from tests.utils.embedder import LocalEmbedder

Client = AsyncTestClient[Litestar]


async def _text_of(client: Client, headers: dict[str, str]) -> str:
    response = await client.get("/api/v1/curriculum/standards/M707", headers=headers)
    assert response.status_code == 200
    value: str = response.json()["text"]
    return value


async def _until(client: Client, headers: dict[str, str], expected: str, seconds: float = 5.0) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while await _text_of(client, headers) != expected:
        assert loop.time() - started < seconds, f"still not {expected!r} after {seconds} s"
        await asyncio.sleep(0.05)
    return loop.time() - started


async def test_a_curriculum_change_reaches_cached_answers_within_the_check_interval(
    client: Client,
    app: Litestar,
    teacher_headers: dict[str, str],
    curriculum: LoadReport,
    db_engine: AsyncEngine,
) -> None:
    cache: CurriculumCache = app.state.curriculum_cache
    original = await _text_of(client, teacher_headers)
    assert ("getStandard", "M707") in cache._answers
    assert await _text_of(client, teacher_headers) == original  # a hit
    try:
        async with db_engine.begin() as connection:
            await connection.execute(
                text("UPDATE curriculum_standards SET text = text || ' (revised)' WHERE code = 'M707'")
            )
        waited = await _until(client, teacher_headers, original + " (revised)")
        assert waited <= cache.check_seconds + 1.5
    finally:
        async with db_engine.begin() as connection:
            await connection.execute(
                text("UPDATE curriculum_standards SET text = :text WHERE code = 'M707'"), {"text": original}
            )
    await _until(client, teacher_headers, original)


async def test_unknown_codes_and_lists_are_answered_the_same_from_memory(
    client: Client, teacher_headers: dict[str, str], curriculum: LoadReport
) -> None:
    for _ in range(2):
        missing = await client.get("/api/v1/curriculum/standards/NOPE999", headers=teacher_headers)
        assert missing.status_code == 404
        assert "NOPE999" in missing.json()["detail"]
    first = await client.get("/api/v1/curriculum/chapters?class=7&subject=science", headers=teacher_headers)
    second = await client.get("/api/v1/curriculum/chapters?class=7&subject=science", headers=teacher_headers)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.headers["content-type"] == "application/json"


async def test_searches_ranked_by_meaning_are_remembered_until_the_curriculum_changes(
    client: Client,
    app: Litestar,
    teacher_headers: dict[str, str],
    curriculum: LoadReport,
    db_engine: AsyncEngine,
) -> None:
    cache: CurriculumCache = app.state.curriculum_cache
    params = {"q": "evaporation, condensation and the water cycle", "limit": 3}
    key = ("searchStandards", params["q"], StandardFilters(), None, 3)

    # The ML tier is away (the session's app has none): ranked by text, answered, not remembered.
    text_only = await client.get("/api/v1/curriculum/standards", params=params, headers=teacher_headers)
    assert text_only.status_code == 200 and text_only.json()["search_mode"] == "text"
    assert key not in cache._answers

    serving = app.state.serving
    try:
        app.state.serving = first_embedder = LocalEmbedder()
        first = await client.get("/api/v1/curriculum/standards", params=params, headers=teacher_headers)
        assert first.json()["search_mode"] == "hybrid" and first_embedder.calls == 1
        assert key in cache._answers
        app.state.serving = second_embedder = LocalEmbedder()
        again = await client.get("/api/v1/curriculum/standards", params=params, headers=teacher_headers)
        assert again.content == first.content and second_embedder.calls == 0  # from memory, no ML call
    finally:
        app.state.serving = serving

    async with db_engine.begin() as connection:  # any write to a curriculum table bumps its version
        await connection.execute(text("UPDATE curriculum_standards SET text = text WHERE code = 'M707'"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cache.check_seconds + 1.5
    while key in cache._answers:
        assert loop.time() < deadline, "the search answer outlived a curriculum change"
        await asyncio.sleep(0.05)


async def test_callers_that_miss_together_share_one_computation(
    db_engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cache = CurriculumCache(db_engine, sessions)
    calls: list[int] = []
    release = asyncio.Event()

    async def produce(_: AsyncSession) -> dict[str, int]:
        calls.append(1)
        await release.wait()
        return {"answer": 42}

    requests = [SimpleNamespace(scope={"state": {}}) for _ in range(8)]
    waiting = [asyncio.create_task(cache.answer(r, ("probe",), produce)) for r in requests]  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    waiting[0].cancel()  # one caller gives up; the others still get the answer
    release.set()
    answers = await asyncio.gather(*waiting[1:])
    assert calls == [1], "eight callers, one computation"
    assert set(answers) == {b'{"answer":42}'}
    assert all(ANSWERED_KEY in r.scope["state"] for r in requests[1:])


async def test_a_sweep_with_nothing_to_embed_leaves_the_curriculum_version_alone(
    sessions: async_sessionmaker[AsyncSession], curriculum: LoadReport
) -> None:
    async def version() -> int:
        async with sessions() as session:
            return int(await session.scalar(text("SELECT version FROM curriculum_version")) or 0)

    before = await version()
    assert await embed_missing(sessions, LocalEmbedder()) == 0
    assert await version() == before, "a no-op sweep emptied every API process's curriculum cache"
