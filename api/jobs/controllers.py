"""`GET /api/v1/jobs/{id}`: poll background work (memory embedding, long content generation)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get
from sqlalchemy.ext.asyncio import AsyncSession

from api.jobs import schemas, services
from api.oauth.guards import Principal, requires_any_scope


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ["jobs"]

    @get(
        "/{job_id:uuid}",
        operation_id="getJob",
        summary="Check a background job started by this app for this user: status, and its result or error.",
        guards=[requires_any_scope("memories:write", "content:generate")],
    )
    async def get_job(
        self, request: Request[Principal, Any, Any], db_session: AsyncSession, job_id: uuid.UUID
    ) -> schemas.JobOut:
        job = await services.get_job(
            db_session, job_id, app_id=request.user.app_id, user_id=request.user.user_id
        )
        return schemas.JobOut(
            id=job.id,
            kind=job.kind,
            status=job.status,  # type: ignore[arg-type]
            attempts=job.attempts,
            created_at=job.created_at,
            updated_at=job.updated_at,
            result=job.result,
            error=job.last_error if job.status in {"failed", "queued"} else None,
        )
