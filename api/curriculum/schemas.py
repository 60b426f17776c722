"""Compact response shapes for GPTs (every page stays far below GPT Actions' 100,000-character limit)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

ClassLevel = Annotated[int, msgspec.Meta(ge=1, le=12, description="School class (grade), 1 to 12.")]
StandardKind = Literal["outcome", "chapter"]
Topics = Annotated[
    list[str],
    msgspec.Meta(description="The chapter's section headings / key topics, as its source prints them."),
]
MatchedTopic = Annotated[
    str | None,
    msgspec.Meta(
        description="Search hits on a chapter: the chapter topic closest to the query (why it matched)."
    ),
]


class BoardOut(msgspec.Struct):
    code: str
    name: str


class BoardList(msgspec.Struct):
    items: list[BoardOut]


class ClassOut(msgspec.Struct):
    class_level: int = msgspec.field(name="class")
    subjects: int
    outcomes: int
    chapters: int


class ClassList(msgspec.Struct):
    items: list[ClassOut]


class SubjectOut(msgspec.Struct):
    slug: str
    name: str
    classes: list[int]


class SubjectList(msgspec.Struct):
    items: list[SubjectOut]


class ChapterOut(msgspec.Struct, omit_defaults=True):
    code: str
    number: int
    title: str
    book: str | None = None
    topics: Topics = msgspec.field(default_factory=list)


class ChapterList(msgspec.Struct):
    class_level: int = msgspec.field(name="class")
    subject: str
    items: list[ChapterOut]


class StandardOut(msgspec.Struct, omit_defaults=True):
    """A learning outcome or a chapter; `score` and `matched_topic` only on search hits."""

    code: str
    kind: StandardKind
    text: str
    class_level: int = msgspec.field(name="class")
    subject: str
    board: str
    official_code: bool
    chapter: str | None = None
    chapter_number: int | None = None
    book: str | None = None
    score: float | None = None
    matched_topic: MatchedTopic = None


class StandardDetail(StandardOut, omit_defaults=True):
    sources: list[str] = msgspec.field(default_factory=list)
    topics: Topics = msgspec.field(default_factory=list)
    topics_source: Annotated[
        str | None,
        msgspec.Meta(description="Where the topics come from (a source id in the seed data's notes)."),
    ] = None


class StandardPage(msgspec.Struct, omit_defaults=True):
    items: list[StandardOut]
    next_cursor: str | None
    search_mode: Literal["hybrid", "text", "none"] = "none"
    note: str | None = None


class AlignmentHit(msgspec.Struct):
    code: str
    kind: StandardKind
    text: str
    class_level: int = msgspec.field(name="class")
    subject: str
    score: float
