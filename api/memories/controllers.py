"""Memory bank endpoints (scopes `memories:read`, `memories:write`); every query is scoped to the caller."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.lib.embeddings import embed_query
from api.lib.settings import Settings
from api.memories import schemas, services
from api.oauth.guards import Principal, requires_scope


def owner_of(request: Request[Principal, Any, Any]) -> services.Owner:
    return services.Owner(app_id=request.user.app_id, user_id=request.user.user_id)


class MemoryController(Controller):
    path = "/api/v1/memories"
    tags = ["memories"]

    @post(
        "/",
        operation_id="createMemory",
        summary=(
            "Remember something about the signed-in user for later conversations (a preference, progress, a "
            "goal). Returns at once with status pending; it becomes searchable within seconds."
        ),
        guards=[requires_scope("memories:write")],
        status_code=HTTP_202_ACCEPTED,
    )
    async def create_memory(
        self,
        request: Request[Principal, Any, Any],
        db_engine: AsyncEngine,
        settings: Settings,
        data: schemas.MemoryCreate,
        idempotency_key: Annotated[
            str | None,
            Parameter(header="Idempotency-Key", min_length=1, max_length=200, description="Retry-safe key."),
        ] = None,
    ) -> schemas.MemoryAccepted:
        return await services.create_memory(db_engine, owner_of(request), data, settings, idempotency_key)

    @get(
        "/",
        operation_id="listMemories",
        summary="List the signed-in user's memories, newest first, optionally only those with a tag.",
        guards=[requires_scope("memories:read")],
    )
    async def list_memories(
        self,
        request: Request[Principal, Any, Any],
        db_engine: AsyncEngine,
        tag: Annotated[str | None, Parameter(max_length=64)] = None,
        cursor: Annotated[
            str | None, Parameter(max_length=500, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    ) -> schemas.MemoryPage:
        items, next_cursor = await services.list_memories(
            db_engine, owner_of(request), tag=tag, cursor=cursor, limit=limit
        )
        return schemas.MemoryPage(items=items, next_cursor=next_cursor)

    @post(
        "/search",
        operation_id="searchMemories",
        summary="Recall the signed-in user's memories by meaning (recent ones preferred), best first.",
        guards=[requires_scope("memories:read")],
        status_code=200,
    )
    async def search_memories(
        self,
        request: Request[Principal, Any, Any],
        db_engine: AsyncEngine,
        redis: Redis,
        settings: Settings,
        data: schemas.MemorySearch,
    ) -> schemas.MemorySearchResult:
        vector = await embed_query(data.query, request.app.state.serving, redis)
        hits = await services.search_memories(
            db_engine, owner_of(request), vector, limit=data.limit, tags=data.tags, settings=settings
        )
        return schemas.MemorySearchResult(items=hits)

    @get(
        "/{memory_id:uuid}",
        operation_id="getMemory",
        summary="Get one of the signed-in user's memories by id.",
        guards=[requires_scope("memories:read")],
    )
    async def get_memory(
        self, request: Request[Principal, Any, Any], db_engine: AsyncEngine, memory_id: uuid.UUID
    ) -> schemas.Memory:
        return await services.get_memory(db_engine, owner_of(request), memory_id)

    @delete(
        "/{memory_id:uuid}",
        operation_id="deleteMemory",
        summary="Forget one of the signed-in user's memories for good.",
        guards=[requires_scope("memories:write")],
    )
    async def delete_memory(
        self, request: Request[Principal, Any, Any], db_engine: AsyncEngine, memory_id: uuid.UUID
    ) -> None:
        await services.delete_memory(db_engine, owner_of(request), memory_id)
