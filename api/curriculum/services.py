"""Curriculum queries and hybrid search (pgvector and PostgreSQL full text over standards and chapter topics,
fused by weighted reciprocal rank)."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, TextClause, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.curriculum import schemas
from api.curriculum.models import Board, Book, Standard, Subject
from api.lib.db import rows_of
from api.lib.errors import InvalidInput, NotFound


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
    db: AsyncSession | AsyncEngine, filters: StandardFilters, *, cursor: str | None, limit: int
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
    rows = await rows_of(
        db, query.order_by(Standard.class_level, Standard.kind, Standard.code).limit(limit + 1)
    )
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _encode_cursor({"c": last.class_level, "k": last.kind, "s": last.code})
    return schemas.StandardPage(items=[_standard_out(r) for r in rows[:limit]], next_cursor=next_cursor)


# ---- search ------------------------------------------------------------------------------------------------
# The ranking was chosen by measurement on tests/curriculum/teacher_queries.py (bench/search_quality.py
# --tune prints the grid): weighted reciprocal-rank fusion of three bounded candidate lists over the
# filtered rows:
#   vs  the standard's own vector (a chapter's is over its title, topics and book/subject context);
#   vt  a chapter's best-matching topic vector (outcomes and topic-less chapters: see OWN_VECTOR_AS_TOPIC);
#   tt  the best full-text match among a chapter's topics.
# Full-text rank of the standard rows themselves is left out when there is a vector: on the labelled set it
# cost recall (common words such as "numbers" match dozens of rows). It is the text-only fallback's 2nd list.
RRF_K = 10
CANDIDATES = 20
TOPIC_ROWS = 4 * CANDIDATES  # nearest topic rows looked at to find CANDIDATES distinct chapters
W_STANDARD_VECTOR = 1.0
W_TOPIC_VECTOR = 1.5
W_TOPIC_TEXT = 0.5
OWN_VECTOR_AS_TOPIC = True  # an outcome / topic-less chapter is in the topic-vector list with its own vector
OWN_TEXT_AS_TOPIC = False  # ... and in the topic-text list with its own text
TEXT_ONLY_K = 5
W_TEXT_ONLY_TOPIC = 1.0
W_TEXT_ONLY_STANDARD = 0.5

_FILTER_SQL = {  # only the filters a request gives: a generic plan full of "param IS NULL OR" guards was 4x
    # slower than a planned one (15 ms of PostgreSQL CPU instead of 4), and PostgreSQL picks the generic plan
    # after five executions of a prepared statement
    "board": "upper(b.code) = upper(CAST(:board AS text))",
    "class_level": "s.class_level = CAST(:class_level AS integer)",
    "subject": "subj.slug LIKE CAST(:subject AS text)",
    "kind": "s.kind = CAST(:kind AS text)",
    "chapter_number": "s.chapter_number = CAST(:chapter_number AS integer)",
    "chapter": "(s.code = CAST(:chapter AS text) OR lower(s.chapter_title) = lower(CAST(:chapter AS text)))",
}
_NARROWING = ("board", "subject", "kind", "chapter_number", "chapter")  # not on the topic rows themselves


def _filtered_sql(shape: tuple[str, ...]) -> str:
    where = " AND ".join(_FILTER_SQL[name] for name in shape) or "TRUE"
    return f"""
    SELECT s.id, s.code, s.topics_source IS NOT NULL AS has_topics
    FROM curriculum_standards s
    JOIN curriculum_subjects subj ON subj.id = s.subject_id
    JOIN curriculum_boards b ON b.id = s.board_id
    WHERE {where}
"""  # noqa: S608 (constants of this module only)


_TSQUERY = "to_tsquery('english', replace(plainto_tsquery('english', CAST(:q AS text))::text, ' & ', ' | '))"
_OWN_TEXT = """
        UNION ALL
        SELECT f.id, f.code, ts_rank_cd(s.search_text, tq.q)
        FROM curriculum_standards s JOIN f ON f.id = s.id, tq
        WHERE NOT f.has_topics AND s.search_text @@ tq.q"""
_OWN_VECTOR = "OR position = -2"  # loader.OWN_ONLY_ROW: the own row of a standard without topics
_TOPIC_TEXT = f"""
    tq AS (SELECT {_TSQUERY} AS q),
    tx AS (
        SELECT t.standard_id AS id, f.code, ts_rank_cd(t.search_text, tq.q) AS x
        FROM curriculum_topics t JOIN f ON f.id = t.standard_id, tq
        WHERE t.search_text @@ tq.q AND t.position >= 0
        {_OWN_TEXT if OWN_TEXT_AS_TOPIC else ""}
    ),
    tt AS (
        SELECT id, row_number() OVER (ORDER BY max(x) DESC, code) AS r FROM tx GROUP BY id, code
        ORDER BY r LIMIT {CANDIDATES}
    )"""  # noqa: S608 (constants of this module only)
_DETAILS = """
    SELECT s.code, s.kind, s.text, s.class_level, s.official_code, s.chapter_title, s.chapter_number,
           subj.name AS subject, b.code AS board, bk.title AS book, fused.score, {matched} AS matched_topic
    FROM fused
    JOIN curriculum_standards s ON s.id = fused.id
    JOIN curriculum_subjects subj ON subj.id = s.subject_id
    JOIN curriculum_boards b ON b.id = s.board_id
    LEFT JOIN curriculum_books bk ON bk.id = s.book_id
    ORDER BY fused.score DESC, s.code
"""
_NEAREST_TOPIC = """(
        SELECT t.topic FROM curriculum_topics t, qv
        WHERE t.standard_id = s.id AND t.position >= 0 AND t.embedding IS NOT NULL
        ORDER BY t.embedding <#> qv.v LIMIT 1)"""
_BEST_TEXT_TOPIC = """(
        SELECT t.topic FROM curriculum_topics t, tq
        WHERE t.standard_id = s.id AND t.position >= 0 AND t.search_text @@ tq.q
        ORDER BY ts_rank_cd(t.search_text, tq.q) DESC, t.position LIMIT 1)"""


# One statement, one round trip, the same text every call (SQLAlchemy compiles it once, asyncpg prepares it
# once per connection); the query vector travels as a binary float4[] parameter, not 384 numbers as text.
# Every vector comes from curriculum_topics (each standard's own row has position -1 or -2, see
# loader.OWN_ROW), filtered on the rows' own columns, one distance per row, computed once.
# Inner product (<#>) orders like cosine: all vectors are unit length.
@functools.cache
def _statements(shape: tuple[str, ...]) -> tuple[TextClause, TextClause]:
    """The hybrid and the text-only statement for one set of filters (at most 2^6, built once each)."""
    scope_filter = "".join(
        (
            "\n          AND t.class_level = CAST(:class_level AS integer)" if "class_level" in shape else "",
            "\n          AND t.standard_id IN (SELECT id FROM f)" if set(shape) & set(_NARROWING) else "",
        )
    )
    hybrid = text(
        f"""
    WITH qv AS (SELECT CAST(CAST(:v AS real[]) AS vector) AS v),
    f AS ({_filtered_sql(shape)}),
    scope AS MATERIALIZED (
        SELECT t.standard_id AS id, t.position, t.embedding <#> qv.v AS d
        FROM curriculum_topics t, qv
        WHERE t.embedding IS NOT NULL{scope_filter}
    ),
    vs AS (
        SELECT id, row_number() OVER (ORDER BY d, id) AS r FROM (
            SELECT id, d FROM scope WHERE position < 0 ORDER BY d LIMIT {CANDIDATES}
        ) AS nearest
    ),
    vt AS (
        SELECT id, row_number() OVER (ORDER BY min(d), id) AS r FROM (
            SELECT id, d FROM scope WHERE position >= 0 {_OWN_VECTOR if OWN_VECTOR_AS_TOPIC else ""}
            ORDER BY d LIMIT {TOPIC_ROWS}
        ) AS nearest
        GROUP BY id ORDER BY r LIMIT {CANDIDATES}
    ),
    {_TOPIC_TEXT},
    fused AS (
        SELECT id, sum(w / ({RRF_K} + r)) AS score FROM (
            SELECT id, r, {W_STANDARD_VECTOR} AS w FROM vs
            UNION ALL SELECT id, r, {W_TOPIC_VECTOR} FROM vt
            UNION ALL SELECT id, r, {W_TOPIC_TEXT} FROM tt
        ) AS ranked
        GROUP BY id ORDER BY score DESC, id OFFSET :offset LIMIT :limit
    )
    {_DETAILS.format(matched=_NEAREST_TOPIC)}
    """  # noqa: S608 (constants of this module only)
    )
    text_only = text(
        f"""
    WITH f AS MATERIALIZED ({_filtered_sql(shape)}),
    {_TOPIC_TEXT},
    ts AS (
        SELECT f.id, row_number() OVER (ORDER BY ts_rank_cd(s.search_text, tq.q) DESC, f.code) AS r
        FROM curriculum_standards s JOIN f ON f.id = s.id, tq
        WHERE s.search_text @@ tq.q ORDER BY r LIMIT {CANDIDATES}
    ),
    fused AS (
        SELECT id, sum(w / ({TEXT_ONLY_K} + r)) AS score FROM (
            SELECT id, r, {W_TEXT_ONLY_TOPIC} AS w FROM tt
            UNION ALL SELECT id, r, {W_TEXT_ONLY_STANDARD} FROM ts
        ) AS ranked
        GROUP BY id ORDER BY score DESC, id OFFSET :offset LIMIT :limit
    )
    {_DETAILS.format(matched=_BEST_TEXT_TOPIC)}
    """  # noqa: S608 (constants of this module only)
    )
    return hybrid, text_only


_HYBRID_TOP = (W_STANDARD_VECTOR + W_TOPIC_VECTOR + W_TOPIC_TEXT) / (RRF_K + 1)
_TEXT_TOP = (W_TEXT_ONLY_TOPIC + W_TEXT_ONLY_STANDARD) / (TEXT_ONLY_K + 1)


def _search_params(filters: StandardFilters) -> dict[str, Any]:
    from api.curriculum.loader import slugify

    chapter = filters.chapter.strip() if filters.chapter else None
    return {
        "board": filters.board or None,
        "class_level": filters.class_level,
        "subject": f"{slugify(filters.subject)}%" if filters.subject else None,
        "kind": filters.kind or None,
        "chapter_number": int(chapter) if chapter and chapter.isdigit() else None,
        "chapter": chapter if chapter and not chapter.isdigit() else None,
    }


async def search_standards(
    db: AsyncSession | AsyncEngine,
    filters: StandardFilters,
    q: str,
    query_vector: Sequence[float] | None,
    *,
    cursor: str | None,
    limit: int,
) -> schemas.StandardPage:
    """Best first: fused vector and full-text ranks of standards and chapter topics (text only without a
    vector). `db` is an engine (one autocommit round trip, the API's path) or a session (tests, tools)."""
    offset = 0
    if cursor:
        payload = _decode_cursor(cursor)
        if payload.get("q") != q or not isinstance(payload.get("o"), int) or payload["o"] < 0:
            raise InvalidInput("cursor belongs to a different search; start again without it")
        offset = payload["o"]
    params = {k: v for k, v in _search_params(filters).items() if v is not None}
    hybrid, text_only = _statements(tuple(params))
    params.update(q=q, offset=offset, limit=limit + 1)
    if query_vector is not None:
        statement, top = hybrid, _HYBRID_TOP
        params["v"] = query_vector if isinstance(query_vector, list) else list(query_vector)
    else:
        statement, top = text_only, _TEXT_TOP
    rows = await rows_of(db, statement, params)
    items = [
        schemas.StandardOut(
            code=r.code,
            kind=r.kind,
            text=r.text,
            class_level=r.class_level,
            subject=r.subject,
            board=r.board,
            official_code=r.official_code,
            chapter=r.chapter_title,
            chapter_number=r.chapter_number,
            book=r.book,
            score=round(float(r.score) / top, 4),
            matched_topic=r.matched_topic,
        )
        for r in rows[:limit]
    ]
    next_cursor = _encode_cursor({"q": q, "o": offset + limit}) if len(rows) > limit else None
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
