"""Database wiring: advanced-alchemy's SQLAlchemy plugin over asyncpg, Alembic migrations in `migrations/`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from api.lib.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
metadata = orm_registry.metadata


def sqlalchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    """The one SQLAlchemy configuration the app, the CLI and the workers share."""
    return SQLAlchemyAsyncConfig(
        connection_string=settings.async_database_url,
        engine_config=EngineConfig(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_overflow,
            pool_pre_ping=False,
            pool_timeout=5,
            connect_args={
                "timeout": 5,
                "command_timeout": 40,
                "server_settings": {"application_name": "setu-api"},
            },
        ),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
        create_all=False,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            version_table_name="alembic_version",
        ),
    )


@asynccontextmanager
async def standalone_sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory for work outside the app (CLI commands, `setu worker`); disposes its engine after."""
    engine = create_async_engine(
        settings.async_database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_pool_overflow
    )
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()
