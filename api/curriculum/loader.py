"""Load the NCERT seed data (api/curriculum/data, see its SOURCES.md) and embed it: idempotent."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.curriculum.models import Board, Book, Standard, Subject, Topic
from api.lib.embeddings import Embedder
from api.lib.errors import UpstreamUnavailable

log = structlog.get_logger("api.curriculum")

DATA_DIR = Path(__file__).parent / "data"
BOARDS = {
    "NCERT": "National Council of Educational Research and Training",
    "CBSE": "Central Board of Secondary Education",
}
EMBED_BATCH = 16  # small calls: each finishes well inside the serving client's timeout, even on a busy CPU


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def outcome_code(item: dict[str, Any]) -> tuple[str, bool]:
    """The official NAS code when the source has one, else a stable code of ours.

    NCF-SE 2023 curricular goals (`CG-1`, `C-6.1`) are stage-level and repeat in each grade's book, so they
    get `NCFSE-C<class>-<SUBJECT>-<code>` (official_code false: the printed code alone is not unique).
    """
    subject = re.sub(r"[^A-Z]", "", item["subject"].upper())[:3]
    if item.get("code") and str(item.get("code_scheme", "")).startswith("NCF-SE"):
        return f"NCFSE-C{item['class']}-{subject}-{item['code']}", False
    if item.get("code"):
        return str(item["code"]), True
    language = "" if item.get("language", "en") == "en" else f"-{item['language'].upper()}"
    return f"LO-C{item['class']}-{subject}-{int(item['serial_in_class']):02d}{language}", False


@dataclass
class SeedStandard:
    code: str
    kind: str
    official_code: bool
    text: str
    keywords: str
    class_level: int
    subject: str
    book_code: str | None
    chapter_number: int | None
    chapter_title: str | None
    sources: list[str]
    topics: list[str] = field(default_factory=list)
    topics_source: str | None = None


@dataclass
class Seed:
    subjects: set[str] = field(default_factory=set)
    books: list[dict[str, Any]] = field(default_factory=list)
    standards: list[SeedStandard] = field(default_factory=list)


def current_edition(chapters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where a book has two chapter lists (pre- and post-rationalisation), keep the current edition's."""
    lists_by_book: dict[str, set[str]] = {}
    for item in chapters:
        lists_by_book.setdefault(_book_key(item), set()).add(item["list_id"])
    superseded = {
        item["list_id"]
        for item in chapters
        if len(lists_by_book[_book_key(item)]) > 1
        and not item["edition_assessment"].startswith("consistent with the rationalised")
    }
    return [item for item in chapters if item["list_id"] not in superseded]


def _book_key(item: dict[str, Any]) -> str:
    codes = item.get("ncert_book_codes") or []
    return str(codes[0]) if codes else f"{item['class']}:{item['book']}"


def chapter_code(item: dict[str, Any]) -> tuple[str, str | None]:
    """`<book code><NN>` (`jesc101`); a book missing from NCERT's catalogue gets `<list id>-<NN>` instead."""
    codes = item.get("ncert_book_codes") or []
    number = int(item["chapter_number"])
    if codes:
        return f"{codes[0]}{number:02d}", str(codes[0])
    return f"{item['list_id']}-{number:02d}", None


_NOISE_TOPIC = re.compile(r"^(picture|graph|table|figure|fig\.|farmer)\b[\s\d.:]*|^\(p\)|[≡=]", re.IGNORECASE)


def clean_topics(topics: Iterable[str], title: str) -> list[str]:
    """The source's topics as printed, minus captions, table labels, duplicates and the title itself."""
    kept: list[str] = []
    seen = {title.strip().casefold()}
    for topic in topics:
        topic = " ".join(topic.split())
        letters = sum(ch.isalpha() for ch in topic)
        if letters < 3 or _NOISE_TOPIC.search(topic) or topic.casefold() in seen:
            continue
        seen.add(topic.casefold())
        kept.append(topic)
    return kept


def read_seed(path: Path = DATA_DIR) -> Seed:
    """Parse the seed files; chapters only from lists corroborated by two or more public sources.

    Chapters get their topics from `ncert_chapter_topics.json` (joined on list id + chapter number). The
    single-source lists (`ncert_chapters_single_source.json`, uncorroborated) are not loaded.
    """
    seed = Seed()
    catalogue = json.loads((path / "ncert_textbooks.json").read_text())
    seed.books = list(catalogue["books"])
    for item in json.loads((path / "ncert_learning_outcomes.json").read_text()):
        code, official = outcome_code(item)
        seed.subjects.add(item["subject"])
        seed.standards.append(
            SeedStandard(
                code=code,
                kind="outcome",
                official_code=official,
                text=item["outcome"].strip(),
                keywords=f"{item['subject']} class {item['class']}",
                class_level=int(item["class"]),
                subject=item["subject"],
                book_code=None,
                chapter_number=None,
                chapter_title=None,
                sources=[s for s in (item.get("text_source"), item.get("code_source")) if s],
            )
        )
    topics_file = path / "ncert_chapter_topics.json"
    topics_by_chapter = {
        (t["list_id"], int(t["chapter_number"])): t
        for t in (json.loads(topics_file.read_text()) if topics_file.exists() else [])
    }
    seen: set[str] = set()
    for item in current_edition(json.loads((path / "ncert_chapters.json").read_text())):
        code, book_code = chapter_code(item)
        if code in seen:
            raise ValueError(f"duplicate chapter code {code} in seed data")
        seen.add(code)
        seed.subjects.add(item["subject"])
        variants = " ".join(
            v for v in item.get("title_variants_in_sources", []) if v != item["chapter_title"]
        )
        seed.standards.append(
            SeedStandard(
                code=code,
                kind="chapter",
                official_code=False,
                text=item["chapter_title"].strip(),
                keywords=(
                    f"{item['book']} {item['subject']} class {item['class']} "
                    f"chapter {item['chapter_number']} {variants}"
                ).strip(),
                class_level=int(item["class"]),
                subject=item["subject"],
                book_code=book_code,
                chapter_number=int(item["chapter_number"]),
                chapter_title=item["chapter_title"].strip(),
                sources=list(item.get("sources", [])),
                **_topics_of(topics_by_chapter.get((item["list_id"], int(item["chapter_number"])))),
            )
        )
    return seed


def _topics_of(entry: dict[str, Any] | None) -> dict[str, Any]:
    if entry is None:
        return {}
    topics = clean_topics(entry["topics"], entry["chapter_title"])
    return {"topics": topics, "topics_source": entry["topics_source"] if topics else None}


def _book_subject(code: str) -> str:
    return code[2:4]


@dataclass
class LoadReport:
    standards_upserted: int
    books_upserted: int
    embedded: int
    missing_embeddings: int
    topics_upserted: int = 0
    chapters_with_topics: int = 0


async def load_curriculum(
    sessions: async_sessionmaker[AsyncSession],
    embedder: Embedder | None,
    path: Path = DATA_DIR,
    progress: Callable[[int, int], None] | None = None,
) -> LoadReport:
    """Upsert boards, subjects, books and standards, then embed every standard without an embedding.

    A standard whose text changed loses its embedding and is embedded again; unchanged rows are untouched.
    Without an embedder, or with serving down, the text is loaded and the embeddings are left to
    the job worker's embedding sweeper (`api.worker.embedding_sweeper`) or the next load.
    """
    seed = read_seed(path)
    async with sessions() as session, session.begin():
        boards = await _upsert_boards(session)
        subjects = await _upsert_subjects(session, seed.subjects)
        books = await _upsert_books(session, seed.books, boards["NCERT"])
        changed = await _upsert_standards(session, seed.standards, boards["NCERT"], subjects, books)
        topics_changed = await _upsert_topics(session, seed.standards)
    embedded = 0
    if embedder is not None:
        try:
            embedded = await embed_missing(sessions, embedder, progress)
        except UpstreamUnavailable as error:  # the worker's sweeper embeds the rest once serving is up
            log.warning("curriculum loaded without embeddings", reason=error.detail)
    await tidy_search_indexes(
        sessions
    )  # cheap (two small tables), and a reload may follow a sweeper's writes
    async with sessions() as session:
        missing = await session.scalar(select(func.count()).where(Standard.embedding.is_(None))) or 0
        missing += await session.scalar(select(func.count()).where(Topic.embedding.is_(None))) or 0
        with_topics = (
            await session.scalar(
                select(func.count(func.distinct(Topic.standard_id))).where(Topic.position >= 0)
            )
            or 0
        )
    return LoadReport(changed, len(books), embedded, int(missing), topics_changed, int(with_topics))


async def _upsert_boards(session: AsyncSession) -> dict[str, uuid.UUID]:
    for code, name in BOARDS.items():
        await session.execute(
            insert(Board)
            .values(id=uuid.uuid4(), code=code, name=name)
            .on_conflict_do_nothing(index_elements=["code"])
        )
    return dict((await session.execute(select(Board.code, Board.id))).tuples().all())


async def _upsert_subjects(session: AsyncSession, names: Iterable[str]) -> dict[str, uuid.UUID]:
    for name in sorted(names):
        await session.execute(
            insert(Subject)
            .values(id=uuid.uuid4(), slug=slugify(name), name=name)
            .on_conflict_do_update(index_elements=["slug"], set_={"name": name})
        )
    rows = (await session.execute(select(Subject.name, Subject.id))).tuples().all()
    return dict(rows)


async def _upsert_books(
    session: AsyncSession, books: list[dict[str, Any]], board_id: uuid.UUID
) -> dict[str, uuid.UUID]:
    if books:
        statement = insert(Book).values(
            [
                {
                    "id": uuid.uuid4(),
                    "code": book["code"],
                    "title": book["title"],
                    "class_level": int(book["class"]),
                    "medium": book.get("medium") or "English",
                    "board_id": board_id,
                    "chapter_count": book.get("chapter_count_ncert_site_sep2023"),
                }
                for book in books
            ]
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["code"],
                set_={
                    "title": statement.excluded.title,
                    "class_level": statement.excluded.class_level,
                    "medium": statement.excluded.medium,
                    "chapter_count": statement.excluded.chapter_count,
                },
            )
        )
    return dict((await session.execute(select(Book.code, Book.id))).tuples().all())


async def _upsert_standards(
    session: AsyncSession,
    standards: list[SeedStandard],
    board_id: uuid.UUID,
    subjects: dict[str, uuid.UUID],
    books: dict[str, uuid.UUID],
) -> int:
    rows = [
        {
            "id": uuid.uuid4(),
            "code": s.code,
            "kind": s.kind,
            "official_code": s.official_code,
            "text": s.text,
            "keywords": s.keywords,
            "class_level": s.class_level,
            "board_id": board_id,
            "subject_id": subjects[s.subject],
            "book_id": books.get(s.book_code) if s.book_code else None,
            "chapter_number": s.chapter_number,
            "chapter_title": s.chapter_title,
            "sources": s.sources,
            "topics": s.topics,
            "topics_source": s.topics_source,
            "content_hash": _hash(
                embedding_text(s.kind, s.text, s.keywords, s.topics),
                s.class_level,
                s.subject,
                s.chapter_title,
            ),
        }
        for s in standards
    ]
    statement = insert(Standard).values(rows)
    excluded = statement.excluded
    upsert = statement.on_conflict_do_update(
        index_elements=["code"],
        set_={
            "kind": excluded.kind,
            "official_code": excluded.official_code,
            "text": excluded.text,
            "keywords": excluded.keywords,
            "class_level": excluded.class_level,
            "subject_id": excluded.subject_id,
            "book_id": excluded.book_id,
            "chapter_number": excluded.chapter_number,
            "chapter_title": excluded.chapter_title,
            "sources": excluded.sources,
            "topics": excluded.topics,
            "topics_source": excluded.topics_source,
            "content_hash": excluded.content_hash,
            "embedding": None,
            "updated_at": func.now(),
        },
        where=Standard.content_hash != excluded.content_hash,
    ).returning(Standard.id)
    return len((await session.execute(upsert)).all())


OWN_ROW = -1
"""Position of each standard's own row in curriculum_topics (source `self`): its text and the standard's
vector, so that search reads every vector from that one compact table (a chapter row with its topics is
over 2 kB, and PostgreSQL then keeps the vector out of line, one TOAST fetch per distance)."""
OWN_ONLY_ROW = -2
"""The own row of a standard without topics (an outcome, a chapter with none): also its only "topic"."""


async def _upsert_topics(session: AsyncSession, standards: list[SeedStandard]) -> int:
    """One row per chapter topic, keyed by (chapter, position), plus each standard's own row; a changed row
    loses its embedding."""
    ids = {
        row.code: row
        for row in (
            await session.execute(
                select(Standard.code, Standard.id, Standard.subject_id, Standard.content_hash)
            )
        ).all()
    }

    def row(s: SeedStandard, position: int, topic: str, source: str, content_hash: str) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "standard_id": ids[s.code].id,
            "position": position,
            "topic": topic,
            "source": source,
            "class_level": s.class_level,
            "subject_id": ids[s.code].subject_id,
            "content_hash": content_hash,
        }

    rows = [
        row(
            s,
            position,
            topic,
            s.topics_source or "",
            _hash(topic_embedding_text(topic, s.text), s.topics_source),
        )
        for s in standards
        if s.kind == "chapter" and s.code in ids
        for position, topic in enumerate(s.topics)
    ] + [
        row(s, OWN_ROW if s.topics else OWN_ONLY_ROW, s.text, "self", ids[s.code].content_hash)
        for s in standards
        if s.code in ids
    ]
    changed = 0
    for start in range(0, len(rows), 1000):  # asyncpg takes at most 32,767 parameters per statement
        statement = insert(Topic).values(rows[start : start + 1000])
        excluded = statement.excluded
        upsert = statement.on_conflict_do_update(
            index_elements=["standard_id", "position"],
            set_={
                "topic": excluded.topic,
                "source": excluded.source,
                "class_level": excluded.class_level,
                "subject_id": excluded.subject_id,
                "content_hash": excluded.content_hash,
                "embedding": None,
                "updated_at": func.now(),
            },
            where=Topic.content_hash != excluded.content_hash,
        ).returning(Topic.id)
        changed += len((await session.execute(upsert)).all())
    wanted = {(r["standard_id"], r["position"]) for r in rows}
    existing = (await session.execute(select(Topic.id, Topic.standard_id, Topic.position))).all()
    stale = [r.id for r in existing if (r.standard_id, r.position) not in wanted]
    if stale:
        await session.execute(delete(Topic).where(Topic.id.in_(stale)))
    return changed + len(stale)


async def embed_missing(
    sessions: async_sessionmaker[AsyncSession],
    embedder: Embedder,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Embed standards and chapter topics lacking an embedding, in batches; returns how many were embedded."""
    async with sessions() as session:
        standards = (
            await session.execute(
                select(Standard.id, Standard.kind, Standard.text, Standard.keywords, Standard.topics)
                .where(Standard.embedding.is_(None))
                .order_by(Standard.code)
            )
        ).all()
        topics = (
            await session.execute(
                select(Topic.id, Topic.topic, Standard.text)
                .join(Standard, Topic.standard_id == Standard.id)
                .where(Topic.embedding.is_(None), Topic.position >= 0)
                .order_by(Standard.code, Topic.position)
            )
        ).all()
    todo: list[tuple[Any, uuid.UUID, str]] = [
        (Standard, row.id, embedding_text(row.kind, row.text, row.keywords, row.topics)) for row in standards
    ] + [(Topic, row.id, topic_embedding_text(row.topic, row.text)) for row in topics]
    done = 0
    for start in range(0, len(todo), EMBED_BATCH):
        batch = todo[start : start + EMBED_BATCH]
        vectors = await embedder.embed([text for _, _, text in batch])
        async with sessions() as session, session.begin():
            for model in (Standard, Topic):
                values = [
                    {"id": row_id, "embedding": vector}
                    for (table, row_id, _), vector in zip(batch, vectors, strict=True)
                    if table is model
                ]
                if values:
                    await session.execute(update(model), values)
        done += len(batch)
        if progress is not None:
            progress(done, len(todo))
    own_rows_waiting = (
        Topic.standard_id == Standard.id,
        Topic.position < 0,
        Topic.embedding.is_(None),
        Standard.embedding.is_not(None),
    )
    copied = 0
    async with sessions() as session, session.begin():  # own rows take their standard's vector
        # Only write when there is something to copy: any statement on a curriculum table, even one that
        # changes no row, bumps the curriculum version and empties every API process's curriculum cache.
        if await session.scalar(select(exists().where(*own_rows_waiting))):
            result = await session.execute(
                update(Topic).where(*own_rows_waiting).values(embedding=Standard.embedding)
            )
            copied = result.rowcount  # type: ignore[attr-defined]
    if done or copied:
        await tidy_search_indexes(sessions)  # updated rows' full-text entries wait in the GIN pending list
    return done


async def tidy_search_indexes(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Merge the full-text indexes' pending lists and refresh planner statistics after a bulk write.

    A GIN index takes new entries into a pending list that every search scans linearly until (auto)vacuum
    merges it: right after a load, that made one topic search cost 15-35 ms of PostgreSQL CPU instead of
    well under 1 ms.
    """
    try:
        async with sessions() as session, session.begin():
            for index in ("ix_standard_search_text", "ix_topic_search_text"):
                await session.execute(text(f"SELECT gin_clean_pending_list('{index}'::regclass)"))
            await session.execute(text("ANALYZE curriculum_standards, curriculum_topics"))
    except DBAPIError as error:  # e.g. a role that does not own the tables: autovacuum gets there later
        log.warning("search indexes not tidied after the load", error=str(error))


def embedding_text(kind: str, text: str, keywords: str | None, topics: Iterable[str] = ()) -> str:
    """What gets embedded for a standard: the text with its context (subject, class, book) and, for a chapter,
    its topics."""
    if kind != "chapter":
        return text
    topic_text = "; ".join(topics)
    return ". ".join(part for part in (text, topic_text, keywords) if part)


def topic_embedding_text(topic: str, chapter_title: str) -> str:
    """What gets embedded for a topic: the topic as printed with its chapter's title."""
    return f"{topic} ({chapter_title})"
