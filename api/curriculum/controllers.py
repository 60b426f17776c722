"""Curriculum endpoints for GPTs (scope `curriculum:read`)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import Parameter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.curriculum import schemas, services
from api.curriculum.cache import CurriculumCache
from api.lib.embeddings import embed_query
from api.lib.errors import UpstreamUnavailable
from api.oauth.guards import requires_scope

ClassQuery = Annotated[
    int | None, Parameter(query="class", ge=1, le=12, description="School class, 1 to 12.")
]
SubjectQuery = Annotated[
    str | None,
    Parameter(max_length=100, description="Subject name or slug, e.g. 'science' or 'social-science'."),
]


class CurriculumController(Controller):
    path = "/api/v1/curriculum"
    tags = ["curriculum"]
    guards = [requires_scope("curriculum:read")]

    @get("/boards", operation_id="listBoards", summary="List curriculum boards (NCERT, CBSE).")
    async def list_boards(
        self, request: Request[Any, Any, Any], curriculum_cache: CurriculumCache
    ) -> schemas.BoardList:
        return await curriculum_cache.answer(request, ("listBoards",), services.list_boards)

    @get(
        "/classes",
        operation_id="listClasses",
        summary="List classes 1-12 that have curriculum data, with subject, outcome and chapter counts.",
    )
    async def list_classes(
        self,
        request: Request[Any, Any, Any],
        curriculum_cache: CurriculumCache,
        board: Annotated[str | None, Parameter(max_length=32)] = None,
    ) -> schemas.ClassList:
        return await curriculum_cache.answer(
            request, ("listClasses", board), lambda session: services.list_classes(session, board)
        )

    @get(
        "/subjects",
        operation_id="listSubjects",
        summary="List subjects (optionally of one class) with slugs; pass a slug to filter other calls.",
    )
    async def list_subjects(
        self,
        request: Request[Any, Any, Any],
        curriculum_cache: CurriculumCache,
        class_level: ClassQuery = None,
    ) -> schemas.SubjectList:
        return await curriculum_cache.answer(
            request,
            ("listSubjects", class_level),
            lambda session: services.list_subjects(session, class_level),
        )

    @get(
        "/chapters",
        operation_id="listChapters",
        summary="List the NCERT textbook chapters of one class and subject, in book order.",
    )
    async def list_chapters(
        self,
        request: Request[Any, Any, Any],
        curriculum_cache: CurriculumCache,
        class_level: Annotated[
            int, Parameter(query="class", ge=1, le=12, description="School class, 1 to 12.")
        ],
        subject: Annotated[str, Parameter(min_length=1, max_length=100, description="Subject name or slug.")],
    ) -> schemas.ChapterList:
        return await curriculum_cache.answer(
            request,
            ("listChapters", class_level, subject),
            lambda session: services.list_chapters(session, class_level, subject),
        )

    @get(
        "/standards",
        operation_id="searchStandards",
        summary=(
            "Find NCERT learning outcomes and chapters. Use `q` for a teacher's words (meaning + text search "
            "over chapters, their topics and outcomes, best first, with a score and, for a chapter, the "
            "matched_topic that explains the match); filter by board, class, subject, chapter or kind."
        ),
    )
    async def search_standards(
        self,
        request: Request[Any, Any, Any],
        db_engine: AsyncEngine,
        curriculum_cache: CurriculumCache,
        redis: Redis,
        q: Annotated[
            str | None, Parameter(min_length=1, max_length=500, description="What to look for.")
        ] = None,
        board: Annotated[str | None, Parameter(max_length=32)] = None,
        class_level: ClassQuery = None,
        subject: SubjectQuery = None,
        chapter: Annotated[
            str | None, Parameter(max_length=300, description="Chapter number, chapter code or exact title.")
        ] = None,
        kind: Annotated[
            str | None, Parameter(pattern="^(outcome|chapter)$", description="outcome or chapter")
        ] = None,
        cursor: Annotated[
            str | None, Parameter(max_length=500, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=50)] = 10,
    ) -> schemas.StandardPage:
        filters = services.StandardFilters(
            board=board, class_level=class_level, subject=subject, chapter=chapter, kind=kind
        )
        if not q or not q.strip():
            return await services.browse_standards(db_engine, filters, cursor=cursor, limit=limit)
        query = q.strip()

        async def search(_: AsyncSession) -> schemas.StandardPage:
            vector: list[float] | None
            try:
                vector = await embed_query(query, request.app.state.serving, redis)
            except UpstreamUnavailable:
                vector = None  # full-text ranking still answers; the page says so
            return await services.search_standards(
                db_engine, filters, query, vector, cursor=cursor, limit=limit
            )

        # The same question over the same curriculum gets the same page: remembered until the curriculum
        # changes, unless it was ranked by text alone (the ML tier away), which the next ask should redo.
        return await curriculum_cache.answer(
            request,
            ("searchStandards", query, filters, cursor, limit),
            search,
            keep=lambda page: page.search_mode == "hybrid",
        )

    @get(
        "/standards/{code:str}",
        operation_id="getStandard",
        summary="Get one learning outcome or chapter by its code (e.g. M707 or jesc101), with its sources.",
    )
    async def get_standard(
        self, request: Request[Any, Any, Any], curriculum_cache: CurriculumCache, code: str
    ) -> schemas.StandardDetail:
        return await curriculum_cache.answer(
            request, ("getStandard", code), lambda session: services.get_standard(session, code)
        )
