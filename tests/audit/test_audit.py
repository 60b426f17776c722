"""The audit trail: every token decision and API call, written in batches off the request path."""

from __future__ import annotations

import asyncio
import datetime
import uuid

from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from api.apps.models import GptApp
from api.audit.models import AuditEvent
from api.audit.services import AuditLog, parse_window, usage_stats
from api.lib.settings import Settings
from tests.utils.oauth import issue_test_token, register_test_app
from tests.utils.servers import free_port

Client = AsyncTestClient[Litestar]


async def _events(
    sessions: async_sessionmaker[AsyncSession], count: int, **where: object
) -> list[AuditEvent]:
    """Wait (up to 5 s) for the app's flusher to write at least `count` matching events."""
    for _ in range(50):
        async with sessions() as session:
            query = select(AuditEvent).filter_by(**where).order_by(AuditEvent.id)
            rows = list((await session.scalars(query)).all())
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} audit events matching {where}, found {len(rows)}")


async def test_api_calls_are_recorded_with_app_user_operation_status_latency_and_request_id(
    client: Client, app: Litestar, sessions: async_sessionmaker[AsyncSession]
) -> None:
    token = await issue_test_token(app, role="admin")
    answered = await client.get("/api/v1/admin/users", headers=token.headers)
    refused = await client.get("/api/v1/admin/users", headers={"Authorization": "Bearer nope"})
    assert (answered.status_code, refused.status_code) == (200, 401)
    (event,) = await _events(sessions, 1, request_id=answered.headers["x-request-id"])
    assert (event.operation, event.status, event.user_id, event.client_id) == (
        "listUsers",
        200,
        token.user_id,
        token.client_id,
    )
    assert event.latency_ms > 0
    assert (event.kind, event.app_id) == ("api", token.app_id)
    (anonymous,) = await _events(sessions, 1, request_id=refused.headers["x-request-id"])
    assert (anonymous.app_id, anonymous.error) == (None, "invalid_token")


async def test_token_decisions_issued_and_refused_are_recorded_without_secrets(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    gpt, secret = await register_test_app(settings, grant_types=["client_credentials"], redirect_uris=[])
    issued = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(gpt.client_id, secret or "")
    )
    await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(gpt.client_id, "wrong-secret")
    )
    events = await _events(sessions, 2, kind="token", client_id=gpt.client_id)
    assert [(e.operation, e.status, e.error) for e in events] == [
        ("token.client_credentials", 200, None),
        ("token.client_credentials", 401, "invalid_client"),
    ]
    assert events[0].app_id == gpt.id
    stored = " ".join(str(value) for e in events for value in e.to_dict().values())
    assert secret not in stored and "wrong-secret" not in stored
    assert issued.json()["access_token"] not in stored


async def test_a_full_buffer_drops_events_and_counts_them(sessions: async_sessionmaker[AsyncSession]) -> None:
    log = AuditLog(sessions, capacity=2)
    before = REGISTRY.get_sample_value("setu_audit_events_dropped_total") or 0.0
    for _ in range(3):
        log.record("api", "listUsers", 200, 1.0)
    assert len(log) == 2
    assert REGISTRY.get_sample_value("setu_audit_events_dropped_total") == before + 1
    assert await log.flush() == 2


async def test_a_failed_write_keeps_the_events_for_the_next_flush(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    unreachable = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    log = AuditLog(async_sessionmaker(unreachable))
    operation = f"probe-{uuid.uuid4().hex[:8]}"
    log.record("api", operation, 200, 2.5)
    assert await log.flush() == 0
    assert len(log) == 1
    await unreachable.dispose()
    log._sessions = sessions  # the database is back
    assert await log.flush() == 1
    assert len(await _events(sessions, 1, operation=operation)) == 1


async def test_the_buffer_gauge_follows_the_buffer(sessions: async_sessionmaker[AsyncSession]) -> None:
    log = AuditLog(sessions)
    before = REGISTRY.get_sample_value("setu_audit_buffer_events") or 0.0
    log.record("api", "listApps", 200, 1.0)
    assert REGISTRY.get_sample_value("setu_audit_buffer_events") == before + 1
    await log.flush()
    assert REGISTRY.get_sample_value("setu_audit_buffer_events") == before


async def test_usage_stats_give_calls_by_operation_error_rate_percentiles_and_last_use(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    gpt, _ = await register_test_app(settings)
    log = AuditLog(sessions)
    for latency in range(1, 101):
        log.record("api", "searchStandards", 200 if latency <= 90 else 500, float(latency), app_id=gpt.id)
    log.record("api", "createMemory", 422, 7.0, app_id=gpt.id)
    log.record("api", "createMemory", 202, 9.0, app_id=uuid.uuid4())  # another app
    await log.flush()
    async with sessions() as session:
        stats = await usage_stats(session, gpt.id, datetime.timedelta(hours=24))
    assert (stats.calls, stats.errors) == (101, 11)
    assert stats.error_rate == round(11 / 101, 4)
    by_operation = {row.operation: row for row in stats.operations}
    search = by_operation["searchStandards"]
    assert (search.calls, search.errors, search.error_rate) == (100, 10, 0.1)
    assert search.p50_ms == 50.5 and search.p95_ms == 95.05
    assert by_operation["createMemory"].calls == 1
    assert stats.last_used_at is not None
    assert stats.last_used_at > datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)


async def test_flushing_records_the_apps_last_use(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    gpt, _ = await register_test_app(settings)
    log = AuditLog(sessions)
    log.record("api", "listStandards", 200, 1.0, app_id=gpt.id)
    await log.flush()
    async with sessions() as session:
        stored = await session.get_one(GptApp, gpt.id)
    assert stored.last_used_at is not None


async def test_deleting_an_app_keeps_its_audit_history(
    client: Client, app: Litestar, sessions: async_sessionmaker[AsyncSession], admin_headers: dict[str, str]
) -> None:
    token = await issue_test_token(app, ["curriculum:read"])
    log = AuditLog(sessions)
    log.record("api", "searchStandards", 200, 3.0, app_id=token.app_id, client_id=token.client_id)
    await log.flush()
    assert (
        await client.delete(f"/api/v1/admin/apps/{token.app_id}", headers=admin_headers)
    ).status_code == 204
    kept = await _events(sessions, 1, app_id=token.app_id, operation="searchStandards")
    assert kept[0].client_id == token.client_id


def test_windows_are_read_as_minutes_hours_and_days() -> None:
    assert parse_window("30m") == datetime.timedelta(minutes=30)
    assert parse_window("24h") == datetime.timedelta(hours=24)
    assert parse_window("7d") == datetime.timedelta(days=7)
    for bad in ("", "soon", "-1h", "0"):
        try:
            parse_window(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
