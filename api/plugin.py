"""All app wiring in one place: routes, middleware, error mapping, dependencies, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.plugins import InitPluginProtocol
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker

from api.accounts.controllers import AdminUserController
from api.apps.controllers import AdminAppController
from api.content.controllers import ContentController
from api.curriculum.cache import CurriculumCache
from api.curriculum.controllers import CurriculumController
from api.curriculum.edge import CurriculumEdge
from api.jobs.controllers import JobController
from api.lib.cleantext import CleanTextMiddleware
from api.lib.db import database_exception_handlers, refuse_closed_connections
from api.lib.errors import exception_handlers
from api.lib.observability import ObservabilityMiddleware
from api.lib.redis import create_redis, redis_exception_handlers
from api.lib.serving import ServingClient, serving_checks
from api.lib.settings import Settings
from api.memories.controllers import MemoryController
from api.oauth.authorize import AuthorizeController
from api.oauth.controllers import OAuthController
from api.oauth.guards import BearerAuthMiddleware, document_scopes
from api.oauth.runtime import OAuthRuntime, build_runtime
from api.openapi.controllers import ApiDocsController
from api.openapi.errors import ErrorResponsesPlugin
from api.system.controllers import SystemController
from api.system.readiness import database_check, redis_check, watch_dependencies
from api.worker import build_worker, running_worker

log = structlog.get_logger("api")

GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections (Python's default is 700): cyclic garbage waits a
little longer, and the collector stops interrupting requests several times a second."""

# Every controller of every domain, registered here once.
ROUTE_HANDLERS: list[Any] = [
    SystemController,
    OAuthController,
    AuthorizeController,
    AdminUserController,
    AdminAppController,
    CurriculumController,
    MemoryController,
    JobController,
    ContentController,
    ApiDocsController,
]


class ShikshaSetuPlugin(InitPluginProtocol):
    """Wires the service onto a Litestar app."""

    def __init__(self, settings: Settings, db_config: SQLAlchemyAsyncConfig) -> None:
        self.settings = settings
        self.db_config = db_config

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend(ROUTE_HANDLERS)
        app_config.middleware.insert(0, ObservabilityMiddleware)
        app_config.middleware.append(BearerAuthMiddleware)
        app_config.middleware.append(CleanTextMiddleware)  # NUL/lone surrogate anywhere: 422
        app_config.plugins.append(ErrorResponsesPlugin())  # every operation's error answers in the spec
        app_config.exception_handlers.update(exception_handlers)  # type: ignore[arg-type]
        app_config.exception_handlers.update(database_exception_handlers)  # type: ignore[arg-type]
        app_config.exception_handlers.update(redis_exception_handlers)  # type: ignore[arg-type]
        app_config.dependencies.update(
            {
                "settings": Provide(self._settings, use_cache=True, sync_to_thread=False),
                "redis": Provide(_redis_of, sync_to_thread=False),
                "serving": Provide(_serving_of, sync_to_thread=False),
                "oauth": Provide(_oauth_of, sync_to_thread=False),
                "curriculum_cache": Provide(_curriculum_cache_of, sync_to_thread=False),
            }
        )
        app_config.on_startup.append(self._document_scopes)
        app_config.lifespan.append(self._lifespan)
        return app_config

    def _settings(self) -> Settings:
        return self.settings

    def _document_scopes(self, app: Litestar) -> None:
        document_scopes(app, self.settings.base_url)

    @asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        redis = create_redis(self.settings)
        engine = refuse_closed_connections(self.db_config.get_engine())
        app.state.redis = redis
        serving = app.state.serving = ServingClient.from_settings(self.settings)
        app.state.readiness_checks = [database_check(engine), redis_check(redis), *serving_checks(serving)]
        oauth = app.state.oauth = build_runtime(self.settings, self.db_config.create_session_maker(), redis)
        await oauth.prepare()  # the first signing key, so the JWKS lists it before any token
        curriculum_cache = app.state.curriculum_cache = CurriculumCache(
            engine,
            self.db_config.create_session_maker(),
            check_seconds=self.settings.curriculum_cache_seconds,
        )
        # Remembered curriculum answers are sent before routing (same checks, audit and metrics).
        handler = app.asgi_handler
        app.asgi_handler = CurriculumEdge(handler, curriculum_cache, oauth)
        background = [
            asyncio.create_task(curriculum_cache.watch()),
            asyncio.create_task(oauth.audit.run()),
            asyncio.create_task(oauth.maintain()),
            asyncio.create_task(
                watch_dependencies(
                    lambda: app.state.readiness_checks, engine, self.settings.ready_timeout_seconds
                )
            ),
        ]
        worker = build_worker(self.settings, async_sessionmaker(engine, expire_on_commit=False), serving)
        # Start-up objects (routes, models, schemas: most of the heap) leave the collector's scans, so a
        # full collection under load takes milliseconds, not a p99-sized pause; and collections run every
        # GC_YOUNG_THRESHOLD allocations, not every 700 (under load at Python's default, 2-27 ms pauses
        # several times a second were most of getStandard's p99).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        log.info("api started", base_url=self.settings.base_url, worker=self.settings.worker_embedded)
        try:
            if self.settings.worker_embedded:
                async with running_worker(worker):
                    yield
            else:
                yield
        finally:
            app.asgi_handler = handler
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await oauth.audit.flush()
            oauth.limiter.close()
            await redis.aclose()
            await serving.aclose()


def _redis_of(state: State) -> Redis:
    redis: Redis = state.redis
    return redis


def _serving_of(state: State) -> ServingClient:
    serving: ServingClient = state.serving
    return serving


def _curriculum_cache_of(state: State) -> CurriculumCache:
    cache: CurriculumCache = state.curriculum_cache
    return cache


def _oauth_of(state: State) -> OAuthRuntime:
    oauth: OAuthRuntime = state.oauth
    return oauth
