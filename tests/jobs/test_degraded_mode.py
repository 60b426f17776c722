"""Quiet degraded mode: while serving is unreachable the worker logs once when that starts and once when it
ends (with how much work waited), not every sweep; a gauge and `/ready` carry the state meanwhile."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from api.app import create_app
from api.curriculum.loader import LoadReport
from api.curriculum.models import Standard
from api.jobs import services
from api.jobs.outage import Outage
from api.jobs.worker import JobContext, Worker
from api.lib.errors import UpstreamUnavailable
from api.lib.settings import Settings
from api.system.readiness import ReadinessCheck
from api.worker import build_worker, embedding_sweeper
from tests.utils.embedder import LocalEmbedder
from tests.utils.servers import free_port


class SwitchableServing:
    """The real embedding model behind a switch: `down` makes every call fail as an unreachable tier does."""

    def __init__(self) -> None:
        self.down = True
        self.model = LocalEmbedder()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if self.down:
            raise UpstreamUnavailable("the ML tier keeps failing; calls paused 10 s (circuit open)")
        return await self.model.embed(texts)

    async def models(self) -> list[dict[str, Any]]:
        if self.down:
            raise UpstreamUnavailable("the ML tier keeps failing; calls paused 10 s (circuit open)")
        return [{"kind": "embedding", "status": "available"}]


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"dependency": "serving"})


def _events(logs: list[dict[str, Any]], level: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["log_level"] == level]


async def _without_embedding(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).where(Standard.embedding.is_(None))) or 0)


async def test_an_outage_is_logged_once_and_its_end_once_with_the_count(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], curriculum: LoadReport
) -> None:
    async with sessions() as session, session.begin():
        codes = (await session.scalars(select(Standard.code).order_by(Standard.code).limit(3))).all()
        await session.execute(update(Standard).where(Standard.code.in_(codes)).values(embedding=None))
    serving = SwitchableServing()
    worker = build_worker(settings, sessions, serving)
    with capture_logs() as logs:
        for _ in range(4):  # four sweeps, a minute of an outage at the 15 s default
            await worker.sweep()
    warnings = _events(logs, "warning")
    assert len(warnings) == 1, warnings
    assert warnings[0]["event"].startswith("serving unreachable")
    assert warnings[0]["waiting"] >= 3 and "circuit open" in warnings[0]["reason"]
    assert _gauge("setu_worker_degraded") == 1
    assert (_gauge("setu_worker_waiting") or 0) >= 3
    assert await _without_embedding(sessions) == 3

    serving.down = False
    with capture_logs() as logs:
        await worker.sweep()
        await worker.sweep()
    recovered = [entry for entry in logs if entry["event"].startswith("serving reachable again")]
    assert len(recovered) == 1, logs
    assert recovered[0]["done"] >= 3 and recovered[0]["waited"] >= 3 and recovered[0]["still_waiting"] == 0
    assert _events(logs, "warning") == []
    assert _gauge("setu_worker_degraded") == 0 and _gauge("setu_worker_waiting") == 0
    assert await _without_embedding(sessions) == 0


async def test_an_outage_with_nothing_to_embed_ends_when_serving_answers_again(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], curriculum: LoadReport
) -> None:
    serving = SwitchableServing()
    outage = Outage("serving")
    sweep = embedding_sweeper(serving, outage)
    outage.down("memories' jobs cannot reach it")
    with capture_logs() as logs:
        assert await sweep(sessions) == 0  # nothing to embed; serving asked, still down: no new line
        serving.down = False
        assert await sweep(sessions) == 0
    # Only the sweeper's lines: the session app's curriculum cache may log a change an earlier test made.
    events = [entry["event"] for entry in logs if not entry["event"].startswith("curriculum changed")]
    assert events == ["serving reachable again: waiting background work resumed"]
    assert not outage.active


async def test_job_attempts_failing_on_the_outage_are_not_a_warning_each(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def handler(context: JobContext, payload: dict[str, Any]) -> None:
        raise UpstreamUnavailable("the ML tier is not configured (SERVING_URL is unset)")

    outage = Outage("serving")
    worker = Worker(
        sessions=sessions,
        handlers={"embed-something": handler},
        services={},
        outage=outage,
        outage_errors=(UpstreamUnavailable,),
    )
    async with sessions() as session, session.begin():
        for n in range(3):
            services.enqueue(session, "embed-something", {"n": n}, max_attempts=3)
    with capture_logs() as logs:
        assert await worker.run_once() == 3
    assert [entry["event"] for entry in _events(logs, "warning")] == [
        "serving unreachable: background work waits and is retried quietly until it is back"
    ]
    assert outage.active and outage.failed_attempts == 3


async def test_ready_says_degraded_naming_serving_and_since_when(settings: Settings) -> None:
    dead = settings.model_copy(update={"serving_url": f"http://127.0.0.1:{free_port()}"})
    async with AsyncTestClient(app=create_app(dead)) as client:
        first = (await client.get("/ready")).json()
        second = await client.get("/ready")
    assert second.status_code == 200  # serving is optional: still ready
    body = second.json()
    assert body["mode"] == "degraded"
    assert body["components"]["serving"]["status"] == "failed"
    assert set(body["degraded"]) >= {"serving"}
    assert body["degraded"]["serving"]["since"] == first["degraded"]["serving"]["since"]
    assert body["degraded"]["serving"]["reason"]


async def test_ready_is_normal_when_every_component_answers(client: AsyncTestClient[Litestar]) -> None:
    async def answers() -> None:
        return None

    checks = client.app.state.readiness_checks
    client.app.state.readiness_checks = [
        *(check for check in checks if check.required),
        ReadinessCheck("serving", answers, required=False),
    ]
    try:
        body = (await client.get("/ready")).json()
    finally:
        client.app.state.readiness_checks = checks
    assert body["mode"] == "normal" and "degraded" not in body
