"""Database wiring: the one way the app, the CLI and the workers talk to PostgreSQL.

One SQLAlchemy engine over asyncpg per process (advanced-alchemy's plugin gives routes an ORM session as
`db_session`). Three rules hold on every path:

- A pooled connection the server has closed (PostgreSQL restarted, `pg_terminate_backend`) is never handed
  out: the pool checks it on checkout (free: asyncpg already saw the socket close) and opens a fresh one,
  so a request that would have met the broken connection runs on a new one instead.
- Hot reads (`read`) run as single autocommit statements, with no BEGIN/COMMIT, and are retried once on a
  fresh connection when the connection breaks under them (a read is always safe to repeat).
- Hot writes that fit one statement (`write`) run the same way, committed when it returns, and are never
  retried (a connection that broke after the server committed would apply them twice).
- When the database is unreachable, every route answers 503 with `Retry-After` and a plain `detail`
  (`database_unavailable_handler`), never 500.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from litestar import Request, Response
from sqlalchemy import Executable, Row, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from api.lib.errors import UpstreamUnavailable, domain_error_handler, internal_error_handler
from api.lib.settings import Settings

log = structlog.get_logger("api.db")

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
metadata = orm_registry.metadata
RETRY_AFTER_SECONDS = 2
"""What a 503 tells clients to wait: a PostgreSQL restart takes about half a second."""


class DatabaseUnavailable(UpstreamUnavailable):
    """PostgreSQL cannot be reached (restarting, down, or every pooled connection busy)."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail
            or "The database is restarting or unreachable; nothing was changed. "
            f"Retry in {RETRY_AFTER_SECONDS} seconds.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            error="database_unavailable",
        )


def engine_options(settings: Settings) -> dict[str, Any]:
    """Pool and driver options for every engine we create."""
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_pool_overflow,
        "pool_pre_ping": False,  # `refuse_closed_connections` does the same check without a round trip
        "pool_timeout": 5,
        "connect_args": {
            "timeout": 5,
            "command_timeout": 40,
            "server_settings": {"application_name": "setu-api"},
        },
    }


def sqlalchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    """The one SQLAlchemy configuration the app, the CLI and the workers share."""
    options = engine_options(settings)
    return SQLAlchemyAsyncConfig(
        connection_string=settings.async_database_url,
        engine_config=EngineConfig(
            pool_size=options["pool_size"],
            max_overflow=options["max_overflow"],
            pool_pre_ping=options["pool_pre_ping"],
            pool_timeout=options["pool_timeout"],
            connect_args=options["connect_args"],
        ),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
        create_all=False,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            version_table_name="alembic_version",
        ),
    )


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: a connection whose socket the server closed is replaced, not handed out."""
    raw = getattr(dbapi_connection, "_connection", None)  # the asyncpg connection under the adapter
    is_closed = getattr(raw, "is_closed", None)
    if is_closed is not None and is_closed():
        raise DisconnectionError("the server closed this pooled connection")  # the pool opens a new one


def refuse_closed_connections(engine: AsyncEngine) -> AsyncEngine:
    """Install the checkout check on `engine`'s pool (idempotent); returns the engine."""
    pool = engine.sync_engine.pool
    if not event.contains(pool, "checkout", _refuse_closed):
        event.listen(pool, "checkout", _refuse_closed)
    return engine


def is_unavailable(error: BaseException) -> bool:
    """Is `error` the database being unreachable (rather than a bug or a bad statement)?"""
    if isinstance(error, (DatabaseUnavailable, PoolTimeout)):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        original = error.orig
        cause = getattr(original, "__cause__", None) or original
        if isinstance(cause, (OSError, TimeoutError)):
            return True
        # asyncpg: "the database system is starting up / shutting down", admin shutdown, lost connection
        name = type(cause).__name__
        return name in {
            "CannotConnectNowError",
            "AdminShutdownError",
            "CrashShutdownError",
            "ConnectionDoesNotExistError",
            "ConnectionFailureError",
            "InterfaceError",
        } or "connection is closed" in str(error)
    return isinstance(error, OSError) and _raised_by_driver(error)


def _raised_by_driver(error: BaseException) -> bool:
    """An OSError from opening a database connection (refused, socket gone, timed out) reaches us
    unwrapped; tell it apart from other OSErrors by where it was raised."""
    traceback = error.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if "/asyncpg/" in filename or "/sqlalchemy/" in filename:
            return True
        traceback = traceback.tb_next
    return False


_autocommit_engines: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


async def read(
    engine: AsyncEngine, statement: Executable, params: Mapping[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """Rows of one SELECT in autocommit mode (no transaction); retried once on a fresh connection when the
    connection breaks under it. Raises DatabaseUnavailable when the database cannot be reached."""
    for attempt in (1, 2):
        try:
            async with _autocommit(engine).connect() as connection:
                result = await connection.execute(statement, params or {})
                return result.all()
        except (DBAPIError, PoolTimeout, OSError) as error:
            if not is_unavailable(error):
                raise
            if attempt == 2 or not isinstance(error, DBAPIError) or not error.connection_invalidated:
                raise DatabaseUnavailable() from error
            log.info("database connection broke under a read; retrying on a fresh one")
    raise AssertionError("unreachable")


def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    autocommit = _autocommit_engines.get(engine)
    if autocommit is None:  # made once: each `execution_options` call builds an engine and its listeners
        autocommit = _autocommit_engines[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return autocommit


async def write(
    db: AsyncSession | AsyncEngine, statement: Executable, params: Mapping[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """Rows (RETURNING) of one writing statement: given an engine, in autocommit mode (one round trip,
    durable once this returns; not retried); given a session, inside its transaction. Raises
    DatabaseUnavailable when the database cannot be reached."""
    if isinstance(db, AsyncSession):
        return (await db.execute(statement, params or {})).all()
    try:
        async with _autocommit(db).connect() as connection:
            return (await connection.execute(statement, params or {})).all()
    except (DBAPIError, PoolTimeout, OSError) as error:
        if is_unavailable(error):
            raise DatabaseUnavailable() from error
        raise


async def rows_of(
    db: AsyncSession | AsyncEngine, statement: Executable, params: Mapping[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """Rows of one SELECT: given an engine, one autocommit round trip (`read`, the API's path); given a
    session, inside its transaction (tests, tools)."""
    if isinstance(db, AsyncEngine):
        return await read(db, statement, params)
    return (await db.execute(statement, params or {})).all()


def database_unavailable_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Exception handler for database errors: 503 + Retry-After when unreachable, else the 500 handler."""
    if not is_unavailable(error):
        return internal_error_handler(request, error)
    log.warning("database unavailable", error=f"{type(error).__name__}: {error}"[:300], path=request.url.path)
    unavailable = error if isinstance(error, DatabaseUnavailable) else DatabaseUnavailable()
    return domain_error_handler(request, unavailable)


database_exception_handlers: dict[type[Exception], Any] = {
    DBAPIError: database_unavailable_handler,
    PoolTimeout: database_unavailable_handler,
    OSError: database_unavailable_handler,
}


@asynccontextmanager
async def standalone_sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory for work outside the app (CLI commands, `setu worker`); disposes its engine after."""
    options = engine_options(settings)
    engine = refuse_closed_connections(
        create_async_engine(
            settings.async_database_url,
            pool_size=options["pool_size"],
            max_overflow=options["max_overflow"],
        )
    )
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()
