"""`setu curriculum load`: every outcome and chapter loaded and embedded, idempotently."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.curriculum.loader import (
    LoadReport,
    chapter_code,
    clean_topics,
    current_edition,
    load_curriculum,
    outcome_code,
    read_seed,
)
from api.curriculum.models import Book, Standard, Topic
from tests.utils.embedder import LocalEmbedder


async def test_every_outcome_and_chapter_is_loaded_with_an_embedding(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> None:
    seed = read_seed()
    async with sessions() as session:
        kinds = dict(
            (await session.execute(select(Standard.kind, func.count()).group_by(Standard.kind)))
            .tuples()
            .all()
        )
        missing = await session.scalar(select(func.count()).where(Standard.embedding.is_(None)))
        missing_topics = await session.scalar(select(func.count()).where(Topic.embedding.is_(None)))
        books = await session.scalar(select(func.count()).select_from(Book))
    assert sum(1 for s in seed.standards if s.kind == "chapter") == 454
    assert kinds == {"outcome": 116, "chapter": 454}
    assert missing == missing_topics == 0
    assert books == len(seed.books) == 559


async def test_chapter_topics_are_loaded_with_their_chapter_and_source(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Topic.topic, Topic.source, Topic.class_level)
                .join(Standard, Topic.standard_id == Standard.id)
                .where(Standard.code == "jemh109")
                .order_by(Topic.position)
            )
        ).all()
        chapter = (await session.execute(select(Standard).where(Standard.code == "jess203"))).scalar_one()
    assert [(r.topic, r.source, r.class_level) for r in rows] == [
        ("Some Applications of Trigonometry", "self", 10),  # its own row (OWN_ROW, position -1) for search
        ("Heights and Distances", "ai_chatbot_ncert_text", 10),
    ]
    assert "Self-Help Groups for the Poor" in chapter.topics
    assert chapter.topics_source == "ncert_main"
    assert curriculum.chapters_with_topics == 308


def test_chapters_of_a_book_missing_from_the_catalogue_get_a_code_of_ours() -> None:
    item = {"ncert_book_codes": [], "list_id": "c11-history-7ch", "chapter_number": 3}
    assert chapter_code(item) == ("c11-history-7ch-03", None)
    assert chapter_code({"ncert_book_codes": ["jesc1"], "chapter_number": 1}) == ("jesc101", "jesc1")


def test_topics_keep_headings_and_drop_captions_and_the_title() -> None:
    topics = [
        "Farming in Palampur",
        "(P) - Provisional Data",
        "Graph 3.2: Poverty Ratio",
        "Palampur",
        "x = 1",
    ]
    assert clean_topics(topics, "Palampur") == ["Farming in Palampur"]


async def test_loading_again_changes_nothing_and_embeds_nothing(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> None:
    embedder = LocalEmbedder()
    report = await load_curriculum(sessions, embedder)
    assert (report.standards_upserted, report.embedded, report.missing_embeddings) == (0, 0, 0)
    assert embedder.calls == 0


async def test_a_changed_text_is_updated_and_embedded_again(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(Standard)
            .where(Standard.code == "M707")
            .values(text="tampered", content_hash="x", embedding=None)
        )
    report = await load_curriculum(sessions, LocalEmbedder())
    assert (report.standards_upserted, report.embedded) == (1, 1)
    async with sessions() as session:
        text = await session.scalar(select(Standard.text).where(Standard.code == "M707"))
    assert text == "Adds/subtracts algebraic expressions"


def test_outcomes_keep_official_codes_and_others_get_stable_ones() -> None:
    assert outcome_code({"code": "M707", "class": 7, "subject": "Mathematics", "serial_in_class": 7}) == (
        "M707",
        True,
    )
    assert outcome_code({"code": None, "class": 1, "subject": "Mathematics", "serial_in_class": 3}) == (
        "LO-C1-MAT-03",
        False,
    )
    ncf = {
        "code": "CG-2",
        "class": 7,
        "subject": "English",
        "serial_in_class": 14,
        "code_scheme": "NCF-SE 2023",
    }
    assert outcome_code(ncf) == ("NCFSE-C7-ENG-CG-2", False)


def test_only_the_current_edition_of_a_book_is_kept() -> None:
    chapters = [
        {
            "ncert_book_codes": ["jemh1"],
            "list_id": "old",
            "edition_assessment": "pre-rationalisation NCF-2005",
        },
        {
            "ncert_book_codes": ["jemh1"],
            "list_id": "new",
            "edition_assessment": "consistent with the rationalised x",
        },
        {
            "ncert_book_codes": ["jesc1"],
            "list_id": "only",
            "edition_assessment": "pre-rationalisation NCF-2005",
        },
    ]
    assert [c["list_id"] for c in current_edition(chapters)] == ["new", "only"]
