"""`/api/v1/admin/users`: manage end users (scope `admin`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.accounts import services
from api.accounts.schemas import RoleName, UserCreate, UserCreated, UserPage, UserRead, UserUpdate
from api.lib.errors import Conflict
from api.oauth.guards import Principal, requires_scope
from api.oauth.runtime import OAuthRuntime

Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size.")]
Offset = Annotated[int, Parameter(ge=0, le=1_000_000, description="Items to skip.")]


class AdminUserController(Controller):
    path = "/api/v1/admin/users"
    tags = ["admin"]
    guards = [requires_scope("admin")]

    @get(operation_id="listUsers", summary="List users, oldest first.")
    async def list_users(
        self, db_session: AsyncSession, limit: Limit = 50, offset: Offset = 0, role: RoleName | None = None
    ) -> UserPage:
        users, total = await services.list_users(db_session, limit=limit, offset=offset, role=role)
        return UserPage([services.to_read(user) for user in users], total, limit, offset)

    @post(operation_id="createUser", summary="Create a user; a generated password is returned once.")
    async def create_user(
        self, db_session: AsyncSession, oauth: OAuthRuntime, data: UserCreate
    ) -> UserCreated:
        user, generated = await services.create_user(
            db_session,
            oauth.passwords,
            email=data.email,
            role=data.role,
            password=data.password,
            name=data.name,
        )
        return UserCreated(services.to_read(user), generated)

    @get("/{user_id:uuid}", operation_id="getUser", summary="One user.")
    async def get_user(self, db_session: AsyncSession, user_id: uuid.UUID) -> UserRead:
        return services.to_read(await services.get_user(db_session, user_id))

    @patch(
        "/{user_id:uuid}",
        operation_id="updateUser",
        summary="Change a user's name, role, password or active flag; deactivating revokes their grants.",
    )
    async def update_user(
        self,
        request: Request[Principal, Any, State],
        db_session: AsyncSession,
        oauth: OAuthRuntime,
        user_id: uuid.UUID,
        data: UserUpdate,
    ) -> UserRead:
        if data.is_active is False or data.role not in (msgspec.UNSET, "admin"):
            _not_yourself(request, user_id, "deactivate or demote")
        user = await services.update_user(db_session, oauth.passwords, user_id, data)
        if data.is_active is False or isinstance(data.password, str):
            await oauth.server.revoke_user_grants(db_session, user_id)
        return services.to_read(user)

    @delete("/{user_id:uuid}", operation_id="deleteUser", summary="Delete a user and revoke their grants.")
    async def delete_user(
        self,
        request: Request[Principal, Any, State],
        db_session: AsyncSession,
        oauth: OAuthRuntime,
        user_id: uuid.UUID,
    ) -> None:
        _not_yourself(request, user_id, "delete")
        await services.get_user(db_session, user_id)
        await oauth.server.revoke_user_grants(db_session, user_id)
        await services.delete_user(db_session, user_id)


def _not_yourself(request: Request[Principal, Any, State], user_id: uuid.UUID, action: str) -> None:
    if request.user.user_id == user_id:
        raise Conflict(f"You cannot {action} your own account; ask another administrator.")
