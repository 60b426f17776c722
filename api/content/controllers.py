"""Content tools for GPTs (scope `content:generate`): simplify, translate, questions, align."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgspec
from litestar import Controller, Request, Response, post
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from sqlalchemy.ext.asyncio import AsyncSession

from api.content import schemas, services
from api.jobs import services as jobs
from api.jobs.worker import JobContext
from api.lib.settings import Settings
from api.oauth.guards import Principal, requires_scope

CONTENT_JOB = "content.generate"
DEFERRED = {
    202: ResponseSpec(
        data_container=schemas.JobAccepted, description="Still working after 35 s: poll getJob with job_id."
    )
}
_TOOLS: dict[str, type[msgspec.Struct]] = {
    "simplify": schemas.SimplifyRequest,
    "translate": schemas.TranslateRequest,
    "questions": schemas.QuestionsRequest,
}


async def _run_tool(
    tool: str, body: msgspec.Struct, models: Any, session: AsyncSession, settings: Settings
) -> Any:
    if tool == "simplify":
        return await services.simplify(models, body, settings)  # type: ignore[arg-type]
    if tool == "translate":
        return await services.translate(models, body, settings)  # type: ignore[arg-type]
    return await services.generate_questions(models, session, body, settings)  # type: ignore[arg-type]


async def _answer_or_defer(
    request: Request[Principal, Any, Any],
    db_session: AsyncSession,
    settings: Settings,
    tool: str,
    body: msgspec.Struct,
) -> Response[Any]:
    """Answer within GPT Actions' 45 s; past `SETU_CONTENT_SYNC_SECONDS`, continue as a durable job (202)."""
    work = _run_tool(tool, body, request.app.state.serving, db_session, settings)
    try:
        result = await asyncio.wait_for(work, settings.content_sync_seconds)
    except TimeoutError:
        job = jobs.enqueue(
            db_session,
            CONTENT_JOB,
            {"tool": tool, "request": msgspec.to_builtins(body)},
            app_id=request.user.app_id,
            user_id=request.user.user_id,
            max_attempts=2,
        )
        await db_session.flush()
        accepted = schemas.JobAccepted(
            job_id=job.id, status="queued", detail="This takes longer than usual; poll getJob with job_id."
        )
        return Response(accepted, status_code=HTTP_202_ACCEPTED)
    return Response(result, status_code=HTTP_200_OK)


async def run_content_job(context: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Job handler: the same tool, run in the background, its answer stored as the job's result."""
    tool = payload["tool"]
    body = msgspec.convert(payload["request"], _TOOLS[tool])
    async with context.sessions() as session:
        result = await _run_tool(
            tool, body, context.services["serving"], session, context.services["settings"]
        )
    converted: dict[str, Any] = msgspec.to_builtins(result)
    return converted


class ContentController(Controller):
    path = "/api/v1/content"
    tags = ["content"]
    guards = [requires_scope("content:generate")]

    @post(
        "/simplify",
        operation_id="simplifyText",
        responses=DEFERRED,
        summary=(
            "Rewrite a text so a student of the given class can read it (optionally in an Indian language); "
            "returns readability figures before and after."
        ),
    )
    async def simplify(
        self,
        request: Request[Principal, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
        data: schemas.SimplifyRequest,
    ) -> Response[schemas.SimplifyResult]:
        return cast(
            "Response[schemas.SimplifyResult]",
            await _answer_or_defer(request, db_session, settings, "simplify", data),
        )

    @post(
        "/translate",
        operation_id="translateText",
        responses=DEFERRED,
        summary="Translate a text between English and the 22 scheduled languages of India (ISO 639 codes).",
    )
    async def translate(
        self,
        request: Request[Principal, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
        data: schemas.TranslateRequest,
    ) -> Response[schemas.TranslateResult]:
        return cast(
            "Response[schemas.TranslateResult]",
            await _answer_or_defer(request, db_session, settings, "translate", data),
        )

    @post(
        "/questions",
        operation_id="generateQuestions",
        responses=DEFERRED,
        summary=(
            "Write practice questions (MCQ, short answer, true/false) with answers, from a text or a "
            "learning outcome code, for a class."
        ),
    )
    async def questions(
        self,
        request: Request[Principal, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
        data: schemas.QuestionsRequest,
    ) -> Response[schemas.QuestionsResult]:
        return cast(
            "Response[schemas.QuestionsResult]",
            await _answer_or_defer(request, db_session, settings, "questions", data),
        )

    @post(
        "/align",
        operation_id="alignToCurriculum",
        summary="Find the NCERT learning outcomes and chapters a text best matches, with similarity scores.",
        status_code=HTTP_200_OK,
    )
    async def align(
        self,
        request: Request[Principal, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
        data: schemas.AlignRequest,
    ) -> schemas.AlignResult:
        return await services.align(request.app.state.serving, db_session, data, settings)
