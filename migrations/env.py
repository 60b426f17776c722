"""Alembic environment: runs our migrations over asyncpg (`setu database upgrade`, `setu up`, tests)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import api.models  # noqa: F401  (registers every table on the metadata)
from api.lib.db import metadata

config: Any = context.config


def _url() -> str:
    url = (
        getattr(config, "db_url", None)
        or config.get_main_option("sqlalchemy.url")
        or os.environ["DATABASE_URL"]
    )
    scheme, _, rest = str(url).partition("://")
    return f"postgresql+asyncpg://{rest}" if scheme != "postgresql+asyncpg" else str(url)


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        version_table=getattr(config, "version_table_name", None) or "alembic_version",
        **kwargs,
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine: AsyncEngine = getattr(config, "engine", None) or create_async_engine(
        _url(), poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
