"""Session-wide real servers (PostgreSQL + pgvector, Valkey) and a ready app client per test.

`DATABASE_URL` / `REDIS_URL` in the environment point the tests at external servers instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from api.app import create_app
from api.curriculum.loader import LoadReport, load_curriculum
from api.lib.migrate import upgrade_database
from api.lib.settings import Settings
from tests.utils.embedder import LocalEmbedder
from tests.utils.oauth import issue_test_token
from tests.utils.servers import embedded_postgres_server, embedded_valkey_server
from tests.utils.serving import use_session_ray_token

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_RAY_TOKEN_DIR: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """The session's Ray auth token (64 hex, mode 0600) in a private directory, set before any test module
    imports ray: the session's `ray.init()` and its drivers use it and never touch `~/.ray`."""
    global _RAY_TOKEN_DIR
    _RAY_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="setu-test-ray-token-"))
    use_session_ray_token(_RAY_TOKEN_DIR)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RAY_TOKEN_DIR is not None:
        shutil.rmtree(_RAY_TOKEN_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        upgrade_database(external)
        yield external
        return
    with embedded_postgres_server() as url:
        upgrade_database(url)
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    with embedded_valkey_server() as (url, _pid):
        yield url


@pytest.fixture(scope="session")
def serving_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ML tier on a real local Ray (MiniLM embedder, tiny Llama generator, translation through it);
    `SERVING_URL` in the environment points the tests at an external one instead."""
    external = os.environ.get("SERVING_URL")
    if external:
        yield external
        return
    from tests.utils.serving import serving_session

    with serving_session(request.config.cache.mkdir("setu-serving")) as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        env="test",
        worker_embedded=False,  # tests run workers explicitly, so no background worker races them
        data_dir=tmp_path_factory.mktemp("data"),
        log_json=True,
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as test_client:
        yield test_client


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _async_url(database_url: str) -> str:
    return Settings(DATABASE_URL=database_url).async_database_url


@pytest.fixture(scope="session")
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(_async_url(database_url), pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """A session factory on the test database, for service-level tests."""
    return async_sessionmaker(db_engine, expire_on_commit=False)


async def _truncate(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        tables = (
            (
                await connection.execute(
                    text(
                        "SELECT tablename FROM pg_tables"
                        " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                        " AND tablename NOT LIKE 'curriculum%' AND tablename <> 'oauth_signing_keys'"
                    )
                )
            )
            .scalars()
            .all()
        )
        if tables:
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


@pytest.fixture(autouse=True)
async def _isolate(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test starts from empty tables and an empty Redis (curriculum reference data and JWT signing
    keys are kept)."""
    yield
    if "database_url" not in request.fixturenames:
        return
    # Reuse the session engine when this test has it; starting an async fixture here is not possible.
    shared = "db_engine" in request.fixturenames
    engine: AsyncEngine = (
        request.getfixturevalue("db_engine")
        if shared
        else create_async_engine(_async_url(request.getfixturevalue("database_url")))
    )
    for attempt in range(5):
        try:
            await _truncate(engine)
            break
        except DBAPIError as error:
            # A session app's background task (audit flush, job worker) can hold a row lock that TRUNCATE
            # waits on while it waits for us: PostgreSQL aborts one side; ours simply tries again.
            if "deadlock" not in str(error) or attempt == 4:
                raise
            await asyncio.sleep(0.2)
    if not shared:
        await engine.dispose()
    if "redis_url" in request.fixturenames:
        redis = Redis.from_url(request.getfixturevalue("redis_url"))
        await redis.flushdb()
        await redis.aclose()


@pytest.fixture
async def admin_headers(app: Litestar, client: AsyncTestClient[Litestar]) -> dict[str, str]:
    """`Authorization` for a fresh admin user of a fresh GPT app, with every scope."""
    return (await issue_test_token(app, role="admin")).headers


@pytest.fixture
async def teacher_headers(app: Litestar, client: AsyncTestClient[Litestar]) -> dict[str, str]:
    """`Authorization` for a fresh teacher of a fresh GPT app, with every non-admin scope."""
    return (await issue_test_token(app, role="teacher")).headers


@pytest.fixture
async def student_headers(app: Litestar, client: AsyncTestClient[Litestar]) -> dict[str, str]:
    """`Authorization` for a fresh student of a fresh GPT app, with every non-admin scope."""
    return (await issue_test_token(app, role="student")).headers


@pytest.fixture(scope="session")
async def curriculum(sessions: async_sessionmaker[AsyncSession]) -> LoadReport:
    """The NCERT seed data, loaded once per session with real embeddings (kept between tests)."""
    return await load_curriculum(sessions, LocalEmbedder())


@pytest.fixture(scope="session")
def ml_settings(settings: Settings, serving_url: str) -> Settings:
    return settings.model_copy(update={"serving_url": serving_url})


@pytest.fixture(scope="session")
async def ml_client(ml_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A client of an app that reaches the serving tier (tokens from `issue_test_token` work on it)."""
    app = create_app(ml_settings)
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as test_client:
        yield test_client
