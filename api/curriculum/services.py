"""Curriculum queries and hybrid search (PostgreSQL full text fused with pgvector by reciprocal rank)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from api.curriculum import schemas
from api.curriculum.models import Board, Book, Standard, Subject
from api.lib.errors import InvalidInput, NotFound

RRF_K = 60
CANDIDATES = 100


@dataclass(frozen=True, slots=True)
class StandardFilters:
    board: str | None = None
    class_level: int | None = None
    subject: str | None = None
    chapter: str | None = None
    kind: str | None = None


async def list_boards(session: AsyncSession) -> schemas.BoardList:
    rows = (await session.execute(select(Board.code, Board.name).order_by(Board.code))).all()
    return schemas.BoardList([schemas.BoardOut(code=r.code, name=r.name) for r in rows])


async def list_classes(session: AsyncSession, board: str | None) -> schemas.ClassList:
    query = (
        select(
            Standard.class_level,
            func.count(func.distinct(Standard.subject_id)).label("subjects"),
            func.count().filter(Standard.kind == "outcome").label("outcomes"),
            func.count().filter(Standard.kind == "chapter").label("chapters"),
        )
        .join(Board)
        .group_by(Standard.class_level)
        .order_by(Standard.class_level)
    )
    if board:
        query = query.where(func.upper(Board.code) == board.upper())
    rows = (await session.execute(query)).all()
    return schemas.ClassList(
        [
            schemas.ClassOut(
                class_level=r.class_level, subjects=r.subjects, outcomes=r.outcomes, chapters=r.chapters
            )
            for r in rows
        ]
    )


async def list_subjects(session: AsyncSession, class_level: int | None) -> schemas.SubjectList:
    query = (
        select(
            Subject.slug, Subject.name, func.array_agg(func.distinct(Standard.class_level)).label("classes")
        )
        .join(Standard, Standard.subject_id == Subject.id)
        .group_by(Subject.slug, Subject.name)
        .order_by(Subject.name)
    )
    if class_level is not None:
        query = query.where(Standard.class_level == class_level)
    rows = (await session.execute(query)).all()
    return schemas.SubjectList(
        [schemas.SubjectOut(slug=r.slug, name=r.name, classes=sorted(r.classes)) for r in rows]
    )


async def list_chapters(session: AsyncSession, class_level: int, subject: str) -> schemas.ChapterList:
    query = (
        select(
            Standard.code,
            Standard.chapter_number,
            Standard.chapter_title,
            Standard.topics,
            Subject.name,
            Book.title,
        )
        .join(Subject, Standard.subject_id == Subject.id)
        .outerjoin(Book, Standard.book_id == Book.id)
        .where(Standard.kind == "chapter", Standard.class_level == class_level, _subject_matches(subject))
        .order_by(Subject.name, Standard.chapter_number)
    )
    rows = (await session.execute(query)).all()
    if not rows:
        raise NotFound(
            f"No chapters for class {class_level} and subject {subject!r}; see listSubjects for names"
        )
    return schemas.ChapterList(
        class_level=class_level,
        subject=rows[0].name,
        items=[
            schemas.ChapterOut(
                code=r.code,
                number=r.chapter_number,
                title=r.chapter_title,
                book=r.title,
                topics=list(r.topics),
            )
            for r in rows
        ],
    )


def _subject_matches(subject: str) -> Any:
    """`science` matches "Science"; `social-science` matches every "Social Science - ..." subject."""
    from api.curriculum.loader import slugify

    slug = slugify(subject)
    return Subject.slug.like(f"{slug}%")


def _standard_out(row: Row[Any], score: float | None = None) -> schemas.StandardOut:
    return schemas.StandardOut(
        code=row.code,
        kind=row.kind,
        text=row.text,
        class_level=row.class_level,
        subject=row.subject,
        board=row.board,
        official_code=row.official_code,
        chapter=row.chapter_title,
        chapter_number=row.chapter_number,
        book=row.book,
        score=score,
    )


def _base_query() -> Any:
    return (
        select(
            Standard.id,
            Standard.code,
            Standard.kind,
            Standard.text,
            Standard.class_level,
            Standard.official_code,
            Standard.chapter_title,
            Standard.chapter_number,
            Standard.sources,
            Standard.topics,
            Standard.topics_source,
            Subject.name.label("subject"),
            Board.code.label("board"),
            Book.title.label("book"),
        )
        .join(Subject, Standard.subject_id == Subject.id)
        .join(Board, Standard.board_id == Board.id)
        .outerjoin(Book, Standard.book_id == Book.id)
    )


def _filtered(query: Any, filters: StandardFilters) -> Any:
    if filters.board:
        query = query.where(func.upper(Board.code) == filters.board.upper())
    if filters.class_level is not None:
        query = query.where(Standard.class_level == filters.class_level)
    if filters.subject:
        query = query.where(_subject_matches(filters.subject))
    if filters.kind:
        query = query.where(Standard.kind == filters.kind)
    if filters.chapter:
        chapter = filters.chapter.strip()
        if chapter.isdigit():
            query = query.where(Standard.chapter_number == int(chapter))
        else:
            query = query.where(
                (Standard.code == chapter) | (func.lower(Standard.chapter_title) == chapter.lower())
            )
    return query


async def get_standard(session: AsyncSession, code: str) -> schemas.StandardDetail:
    row = (await session.execute(_base_query().where(Standard.code == code))).first()
    if row is None:
        raise NotFound(f"No learning outcome or chapter has code {code!r}")
    base = _standard_out(row)
    return schemas.StandardDetail(
        **{f: getattr(base, f) for f in base.__struct_fields__},
        sources=list(row.sources),
        topics=list(row.topics),
        topics_source=row.topics_source,
    )


def _encode_cursor(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned") from None
    if not isinstance(payload, dict):
        raise InvalidInput("cursor is not one this API returned")
    return payload


async def browse_standards(
    session: AsyncSession, filters: StandardFilters, *, cursor: str | None, limit: int
) -> schemas.StandardPage:
    """Standards in curriculum order (class, kind, code), keyset-paginated."""
    query = _filtered(_base_query(), filters)
    if cursor:
        after = _decode_cursor(cursor)
        try:
            key = (int(after["c"]), str(after["k"]), str(after["s"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("cursor is not one this API returned") from None
        query = query.where(func.row(Standard.class_level, Standard.kind, Standard.code) > func.row(*key))
    rows = (
        await session.execute(
            query.order_by(Standard.class_level, Standard.kind, Standard.code).limit(limit + 1)
        )
    ).all()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _encode_cursor({"c": last.class_level, "k": last.kind, "s": last.code})
    return schemas.StandardPage(items=[_standard_out(r) for r in rows[:limit]], next_cursor=next_cursor)


async def search_standards(
    session: AsyncSession,
    filters: StandardFilters,
    q: str,
    query_vector: list[float] | None,
    *,
    cursor: str | None,
    limit: int,
) -> schemas.StandardPage:
    """Rank by reciprocal rank fusion of full-text rank and vector similarity (text only without a vector)."""
    offset = 0
    if cursor:
        payload = _decode_cursor(cursor)
        if payload.get("q") != q or not isinstance(payload.get("o"), int) or payload["o"] < 0:
            raise InvalidInput("cursor belongs to a different search; start again without it")
        offset = payload["o"]
    filtered_ids = _filtered(
        select(Standard.id)
        .join(Subject, Standard.subject_id == Subject.id)
        .join(Board, Standard.board_id == Board.id)
        .outerjoin(Book, Standard.book_id == Book.id),
        filters,
    ).subquery()
    text_rank = text(
        """
        SELECT s.id, row_number() OVER (ORDER BY ts_rank_cd(s.search_text, query) DESC, s.code) AS rank
        FROM curriculum_standards s,
             to_tsquery('english', replace(plainto_tsquery('english', :q)::text, ' & ', ' | ')) AS query
        WHERE s.search_text @@ query AND s.id IN (SELECT id FROM filtered)
        ORDER BY rank LIMIT :candidates
        """
    )
    vector_rank = text(
        """
        SELECT s.id, row_number() OVER (ORDER BY s.embedding <=> CAST(:v AS vector), s.code) AS rank
        FROM curriculum_standards s
        WHERE s.embedding IS NOT NULL AND s.id IN (SELECT id FROM filtered)
        ORDER BY rank LIMIT :candidates
        """
    )
    parts = [f"SELECT id, rank FROM ({text_rank.text}) AS t"]  # noqa: S608 (our own SQL)
    params: dict[str, Any] = {"q": q, "candidates": CANDIDATES}
    if query_vector is not None:
        parts.append(f"SELECT id, rank FROM ({vector_rank.text}) AS v")  # noqa: S608
        params["v"] = "[" + ",".join(f"{x:.7g}" for x in query_vector) + "]"
    compiled_filter = filtered_ids.element.compile(compile_kwargs={"literal_binds": True})
    fused = text(
        f"""
        WITH filtered AS ({compiled_filter})
        SELECT id, sum(1.0 / ({RRF_K} + rank)) AS score
        FROM ({" UNION ALL ".join(parts)}) AS ranked
        GROUP BY id
        ORDER BY score DESC, id
        OFFSET :offset LIMIT :limit
        """  # noqa: S608 (compiled from our own SQLAlchemy expression with literal binds)
    )
    ranked = (await session.execute(fused, {**params, "offset": offset, "limit": limit + 1})).all()
    ids = [r.id for r in ranked[:limit]]
    rows = (
        {r.id: r for r in (await session.execute(_base_query().where(Standard.id.in_(ids)))).all()}
        if ids
        else {}
    )
    top = 1.0 / (RRF_K + 1) * (2 if query_vector is not None else 1)
    items = [
        _standard_out(rows[r.id], round(float(r.score) / top, 4)) for r in ranked[:limit] if r.id in rows
    ]
    next_cursor = _encode_cursor({"q": q, "o": offset + limit}) if len(ranked) > limit else None
    return schemas.StandardPage(
        items=items,
        next_cursor=next_cursor,
        search_mode="hybrid" if query_vector is not None else "text",
        note=None
        if query_vector is not None
        else "semantic search is unavailable right now; ranked by text only",
    )


async def align_text(
    session: AsyncSession, vector: list[float], *, class_level: int | None, subject: str | None, limit: int
) -> list[schemas.AlignmentHit]:
    """Learning outcomes and chapters nearest to a text's embedding (cosine similarity)."""
    distance = Standard.embedding.cosine_distance(vector)  # type: ignore[attr-defined]
    query = (
        select(
            Standard.code,
            Standard.kind,
            Standard.text,
            Standard.class_level,
            Subject.name,
            (1 - distance).label("similarity"),
        )
        .join(Subject, Standard.subject_id == Subject.id)
        .where(Standard.embedding.is_not(None))
        .order_by(distance)
        .limit(limit)
    )
    if class_level is not None:
        query = query.where(Standard.class_level == class_level)
    if subject:
        query = query.where(_subject_matches(subject))
    rows = (await session.execute(query)).all()
    return [
        schemas.AlignmentHit(
            code=r.code,
            kind=r.kind,
            text=r.text,
            class_level=r.class_level,
            subject=r.name,
            score=round(float(r.similarity), 4),
        )
        for r in rows
    ]
