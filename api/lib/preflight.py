"""Start-up checks that turn an unreachable dependency into a message naming the variable to fix."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg

from api.lib.settings import Settings, SettingsError


def _where(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "(unix socket)"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"


async def _connect(url: str, timeout: float) -> None:  # noqa: ASYNC109
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=timeout)
    await connection.close()


def check_database(settings: Settings, timeout: float = 5.0) -> None:
    """Fail fast, naming DATABASE_URL, when the database cannot be reached."""
    url = settings.database_url
    if url is None:
        raise SettingsError("DATABASE_URL: not set")
    try:
        asyncio.run(_connect(url, timeout))
    except (OSError, TimeoutError, asyncpg.PostgresError, ValueError) as error:
        raise SettingsError(
            f"DATABASE_URL: cannot connect to PostgreSQL at {_where(url)} ({type(error).__name__}: {error})"
        ) from None
