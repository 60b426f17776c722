"""Health, readiness, metrics, request ids and problem-details errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from litestar import Litestar, get, post
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.lib.settings import Settings
from tests.utils.servers import embedded_valkey_server


class Lesson(msgspec.Struct):
    title: str
    grade: int


@get("/probe/lessons/{lesson_id:int}", operation_id="getProbeLesson")
async def probe_lesson(lesson_id: int) -> dict[str, int]:
    return {"id": lesson_id}


@post("/probe/lessons", operation_id="createProbeLesson")
async def probe_create(data: Lesson) -> Lesson:
    return data


@get("/probe/boom", operation_id="getProbeBoom")
async def probe_boom() -> None:
    raise RuntimeError("secret internal detail")


@pytest.fixture(scope="module")
async def probe_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(settings)
    app.register(probe_lesson)
    app.register(probe_create)
    app.register(probe_boom)
    async with AsyncTestClient(app=app) as client:
        yield client


async def test_health_answers_without_io(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_each_component_ok(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["components"]["database"] == {"status": "ok"}
    assert body["components"]["redis"] == {"status": "ok"}


async def test_ready_is_503_naming_redis_when_valkey_dies(settings: Settings) -> None:
    with embedded_valkey_server() as (url, _pid):
        app = create_app(settings.model_copy(update={"redis_url": url}))
        async with AsyncTestClient(app=app) as client:
            assert (await client.get("/ready")).status_code == 200
            # leaving the context stops this Valkey under the running app
            valkey_url = url
    async with AsyncTestClient(
        app=create_app(settings.model_copy(update={"redis_url": valkey_url}))
    ) as client:
        response = await client.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["components"]["redis"]["status"] == "failed"
        assert body["components"]["redis"]["reason"]
        assert body["components"]["database"]["status"] == "ok"
        assert (await client.get("/health")).status_code == 200


async def test_request_id_is_echoed_or_generated(client: AsyncTestClient[Litestar]) -> None:
    echoed = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
    assert generated.headers["x-request-id"] != (await client.get("/health")).headers["x-request-id"]


async def test_metrics_label_route_templates_not_raw_paths(probe_client: AsyncTestClient[Litestar]) -> None:
    for lesson_id in (1, 2, 3):
        assert (await probe_client.get(f"/probe/lessons/{lesson_id}")).status_code == 200
    metrics = (await probe_client.get("/metrics")).text
    assert 'route="/probe/lessons/{lesson_id}",status="200"' in metrics
    assert "/probe/lessons/2" not in metrics
    assert "setu_http_request_duration_seconds_bucket" in metrics
    assert "setu_http_requests_in_progress" in metrics
    assert "process_cpu_seconds_total" in metrics


async def test_unknown_route_is_404_problem(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 404
    assert "/no/such/route" in body["detail"]


async def test_wrong_method_is_405_problem(client: AsyncTestClient[Litestar]) -> None:
    response = await client.delete("/health")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "DELETE" in response.json()["detail"]


async def test_invalid_body_is_422_problem_naming_the_field(probe_client: AsyncTestClient[Litestar]) -> None:
    response = await probe_client.post("/probe/lessons", json={"title": "Fractions", "grade": "seven"})
    assert response.status_code == 422
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "grade" in body["detail"]


async def test_unexpected_error_is_500_problem_without_internals(
    probe_client: AsyncTestClient[Litestar],
) -> None:
    response = await probe_client.get("/probe/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["title"] == "Internal server error"
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"]
