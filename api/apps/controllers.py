"""`/api/v1/admin/apps`: register and manage GPT apps (scope `admin`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.apps import services
from api.apps.schemas import AppCreate, AppCredentials, AppPage, AppRead, AppUpdate
from api.audit.schemas import UsageStats
from api.audit.services import parse_window, usage_stats
from api.lib.errors import InvalidInput
from api.lib.settings import Settings
from api.oauth.guards import requires_scope
from api.oauth.runtime import OAuthRuntime

Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size.")]
Offset = Annotated[int, Parameter(ge=0, le=1_000_000, description="Items to skip.")]
Window = Annotated[
    str, Parameter(pattern=r"^\d+(\.\d+)?[smhdw]?$", description="How far back, e.g. 30m, 24h, 7d.")
]


class AdminAppController(Controller):
    path = "/api/v1/admin/apps"
    tags = ["admin"]
    guards = [requires_scope("admin")]

    @get(operation_id="listApps", summary="List GPT apps, oldest first.")
    async def list_apps(self, db_session: AsyncSession, limit: Limit = 50, offset: Offset = 0) -> AppPage:
        apps, total = await services.list_apps(db_session, limit=limit, offset=offset)
        return AppPage([services.to_read(app) for app in apps], total, limit, offset)

    @post(operation_id="createApp", summary="Register a GPT app; its client secret is returned once.")
    async def create_app(
        self, db_session: AsyncSession, settings: Settings, data: AppCreate
    ) -> AppCredentials:
        app, secret = await services.create_app(db_session, settings, data)
        return AppCredentials(services.to_read(app), secret)

    @get("/{app_id:uuid}", operation_id="getApp", summary="One GPT app.")
    async def get_app(self, db_session: AsyncSession, app_id: uuid.UUID) -> AppRead:
        return services.to_read(await services.get_app(db_session, app_id))

    @patch(
        "/{app_id:uuid}",
        operation_id="updateApp",
        summary="Change an app's name, callbacks, scopes or limits.",
    )
    async def update_app(self, db_session: AsyncSession, app_id: uuid.UUID, data: AppUpdate) -> AppRead:
        return services.to_read(await services.update_app(db_session, app_id, data))

    @post(
        "/{app_id:uuid}/suspend",
        operation_id="suspendApp",
        summary="Refuse the app's tokens now.",
        status_code=200,
    )
    async def suspend_app(self, db_session: AsyncSession, oauth: OAuthRuntime, app_id: uuid.UUID) -> AppRead:
        return services.to_read(await services.suspend_app(db_session, oauth.denylist, app_id))

    @post(
        "/{app_id:uuid}/resume",
        operation_id="resumeApp",
        summary="Accept a suspended app again.",
        status_code=200,
    )
    async def resume_app(self, db_session: AsyncSession, oauth: OAuthRuntime, app_id: uuid.UUID) -> AppRead:
        return services.to_read(await services.resume_app(db_session, oauth.denylist, app_id))

    @post(
        "/{app_id:uuid}/reset-secret",
        operation_id="resetAppSecret",
        summary="Replace the client secret; the new one is returned once, the old one stops working.",
        status_code=200,
    )
    async def reset_secret(self, db_session: AsyncSession, app_id: uuid.UUID) -> AppCredentials:
        app, secret = await services.reset_secret(db_session, app_id)
        return AppCredentials(services.to_read(app), secret)

    @delete("/{app_id:uuid}", operation_id="deleteApp", summary="Delete an app (its audit history is kept).")
    async def delete_app(self, db_session: AsyncSession, oauth: OAuthRuntime, app_id: uuid.UUID) -> None:
        await services.delete_app(db_session, oauth.denylist, app_id)

    @get(
        "/{app_id:uuid}/stats",
        operation_id="getAppStats",
        summary="Calls by operation, error rate, p50/p95 latency and last use over a window.",
    )
    async def stats(self, db_session: AsyncSession, app_id: uuid.UUID, since: Window = "24h") -> UsageStats:
        await services.get_app(db_session, app_id)
        try:
            window = parse_window(since)
        except ValueError as error:
            raise InvalidInput(str(error)) from None
        return await usage_stats(db_session, app_id, window)
