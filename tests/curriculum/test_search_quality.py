"""Hybrid search quality: recall@3 on teacher-style queries (tests/curriculum/teacher_queries.py, written
from the chapters' topics) with and without the class filter, and on the older title-style set below."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.curriculum.loader import LoadReport
from api.curriculum.models import Standard
from api.curriculum.services import StandardFilters, search_standards
from tests.curriculum.teacher_queries import TEACHER_QUERIES
from tests.utils.embedder import LocalEmbedder

# (teacher's query, class filter or None, acceptable codes: any of them in the top 3 counts as a hit)
LABELLED_QUERIES: list[tuple[str, int | None, set[str]]] = [
    ("how do plants make their own food", 7, {"gesc101"}),
    ("acids bases and salts", 10, {"jesc102"}),
    ("mirrors lenses reflection and refraction of light", None, {"jesc109", "gesc115"}),
    ("chance of an event happening", None, {"iemh115", "jemh114", "kemh116", "lemh113"}),
    ("solving equations with x squared", None, {"jemh104", "kemh105"}),
    ("adding and subtracting algebraic expressions", None, {"M707", "gemh112", "hemh109"}),
    ("multiplying and dividing fractions", None, {"M702", "gemh102", "femh107", "fegp107", "M606"}),
    ("find rational numbers between two given numbers", None, {"M802", "hemh101", "gemh109"}),
    ("liberty equality fraternity revolution in France", None, {"iess301"}),
    ("why is democracy the best form of government", None, {"iess401", "jess407"}),
    ("protecting forests and wild animals", None, {"jess102", "gesc117", "eeap120"}),
    ("saving water as a precious resource", None, {"gesc116", "jess103"}),
    ("mark historical places on an outline map of India", None, {"SST610"}),
    ("how do living things produce offspring", 10, {"jesc107"}),
    ("speed distance and time of moving objects", 7, {"gesc113"}),
    ("show data using bar graphs", None, {"M721", "gemh103", "hemh105", "femh109"}),
    ("surface area and volume of a cylinder", None, {"M818", "iemh113"}),
    ("properties of a parallelogram", None, {"M812", "iemh109"}),
    ("covalent bonding in carbon compounds", None, {"jesc104"}),
    ("why is the sky blue and how the eye sees", None, {"jesc110"}),
    ("how elections are conducted", None, {"iess403", "SST726"}),
    ("freedom struggle and national movement in India", None, {"jess302"}),
    ("converting percentages to fractions and decimals", None, {"M710"}),
    ("banks, loans and credit", None, {"jess203"}),
    ("inheritance of traits from parents to children", None, {"jesc108"}),
    ("electric current and simple circuits", 7, {"gesc114"}),
    ("how animals adapt to weather and climate", None, {"gesc107"}),
]
RECALL_AT_3_FLOOR = 0.9
TEACHER_FLOOR_WITH_CLASS = 0.95  # issue 14's goals; measured 1.000 and 0.996 when this ranking landed
TEACHER_FLOOR_WITHOUT_CLASS = 0.9


@pytest.fixture(scope="module")
async def recall_at_3(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> tuple[float, list[str]]:
    embedder = LocalEmbedder()
    hits, misses = 0, []
    for query, class_level, expected in LABELLED_QUERIES:
        vector = (await embedder.embed([query]))[0]
        async with sessions() as session:
            page = await search_standards(
                session, StandardFilters(class_level=class_level), query, vector, cursor=None, limit=3
            )
        top = [item.code for item in page.items]
        if expected & set(top):
            hits += 1
        else:
            misses.append(f"{query!r} -> {top}")
    return hits / len(LABELLED_QUERIES), misses


async def test_hybrid_search_finds_the_expected_outcome_or_chapter_in_the_top_3(
    recall_at_3: tuple[float, list[str]],
) -> None:
    recall, misses = recall_at_3
    print(f"\nrecall@3 = {recall:.3f} over {len(LABELLED_QUERIES)} labelled queries; misses: {misses}")
    assert recall >= RECALL_AT_3_FLOOR, misses


@pytest.fixture(scope="module")
async def teacher_ranks(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> dict[bool, list[int | None]]:
    """Rank (0-based) of the first acceptable code in the top 10, per query, with and without the class filter
    (the class of the first acceptable code)."""
    vectors = await LocalEmbedder().embed([q for q, _, _ in TEACHER_QUERIES])
    async with sessions() as session:
        classes = dict((await session.execute(select(Standard.code, Standard.class_level))).tuples().all())
        ranks: dict[bool, list[int | None]] = {True: [], False: []}
        for (query, _, expected), vector in zip(TEACHER_QUERIES, vectors, strict=True):
            for with_class in (True, False):
                filters = StandardFilters(class_level=classes[sorted(expected)[0]] if with_class else None)
                page = await search_standards(session, filters, query, vector, cursor=None, limit=10)
                codes = [item.code for item in page.items]
                ranks[with_class].append(next((i for i, c in enumerate(codes) if c in expected), None))
    return ranks


@pytest.mark.parametrize(
    ("with_class", "floor"), [(True, TEACHER_FLOOR_WITH_CLASS), (False, TEACHER_FLOOR_WITHOUT_CLASS)]
)
async def test_teacher_queries_find_the_chapter_in_the_top_3(
    teacher_ranks: dict[bool, list[int | None]], with_class: bool, floor: float
) -> None:
    ranks = teacher_ranks[with_class]
    recall_1 = sum(r == 0 for r in ranks) / len(ranks)
    recall_3 = sum(r is not None and r < 3 for r in ranks) / len(ranks)
    mrr = sum(1 / (r + 1) for r in ranks if r is not None) / len(ranks)
    misses = [TEACHER_QUERIES[i][0] for i, r in enumerate(ranks) if r is None or r >= 3]
    print(
        f"\n{len(ranks)} queries, class filter {with_class}: "
        f"R@1 {recall_1:.3f} R@3 {recall_3:.3f} MRR {mrr:.3f}"
    )
    assert recall_3 >= floor, misses


async def test_a_chapter_hit_says_which_topic_matched(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> None:
    query = "finding the height of a tower from the angle of elevation"
    vector = (await LocalEmbedder().embed([query]))[0]
    async with sessions() as session:
        page = await search_standards(session, StandardFilters(), query, vector, cursor=None, limit=3)
        text_page = await search_standards(
            session, StandardFilters(), "self-help groups", None, cursor=None, limit=3
        )
    assert (page.items[0].code, page.items[0].matched_topic) == ("jemh109", "Heights and Distances")
    assert page.items[0].score is not None and page.items[0].score > 0.8  # 1.0: first in every list
    assert (text_page.items[0].code, text_page.items[0].matched_topic) == (
        "jess203",
        "Self-Help Groups for the Poor",
    )


async def test_filters_narrow_the_search(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> None:
    vector = (await LocalEmbedder().embed(["fractions"]))[0]
    async with sessions() as session:

        async def codes(**filters: object) -> list[tuple[str, str, int, str]]:
            page = await search_standards(
                session,
                StandardFilters(**filters),
                "fractions",
                vector,
                cursor=None,
                limit=10,  # type: ignore[arg-type]
            )
            return [(i.code, i.kind, i.class_level, i.subject) for i in page.items]

        outcomes = await codes(kind="outcome")
        class_7_maths = await codes(class_level=7, subject="mathematics")
        chapter = await codes(chapter="2", class_level=7, subject="mathematics")
        by_title = await codes(chapter="fractions and decimals")
        board = await codes(board="cbse")
    assert outcomes and all(kind == "outcome" for _, kind, _, _ in outcomes)
    assert class_7_maths and all(c == 7 and s == "Mathematics" for _, _, c, s in class_7_maths)
    assert [code for code, *_ in chapter] == ["gemh102"]
    assert [code for code, *_ in by_title] == ["gemh102"]
    assert board == []  # everything loaded is NCERT's


async def test_text_only_ranking_still_answers_without_embeddings(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        page = await search_standards(
            session, StandardFilters(), "French Revolution", None, cursor=None, limit=3
        )
    assert page.search_mode == "text"
    assert page.items[0].code == "iess301"
    assert page.note


async def test_scores_are_ordered_and_pages_do_not_overlap(
    curriculum: LoadReport, sessions: async_sessionmaker[AsyncSession]
) -> None:
    vector = (await LocalEmbedder().embed(["fractions"]))[0]
    async with sessions() as session:
        first = await search_standards(session, StandardFilters(), "fractions", vector, cursor=None, limit=5)
        assert first.next_cursor is not None
        second = await search_standards(
            session, StandardFilters(), "fractions", vector, cursor=first.next_cursor, limit=5
        )
    scores = [item.score or 0 for item in first.items + second.items]
    assert scores == sorted(scores, reverse=True)
    assert not {i.code for i in first.items} & {i.code for i in second.items}
