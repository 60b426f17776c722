"""Curriculum tables: what a Custom GPT searches when a teacher asks for outcomes or chapters."""

from __future__ import annotations

import uuid

from advanced_alchemy.base import UUIDAuditBase
from sqlalchemy import CheckConstraint, Computed, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy import text as sa_text
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.lib.vectors import embedding_column_type

_SEARCH_TEXT = "to_tsvector('english', coalesce(text, '') || ' ' || coalesce(keywords, ''))"


class Board(UUIDAuditBase):
    """An examination or curriculum board (NCERT, CBSE, extensible)."""

    __tablename__ = "curriculum_boards"
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Subject(UUIDAuditBase):
    """A school subject as the books name it ("Science", "Social Science - History")."""

    __tablename__ = "curriculum_subjects"
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Book(UUIDAuditBase):
    """An NCERT textbook (code like `jesc1`: class letter, medium, subject, book number)."""

    __tablename__ = "curriculum_books"
    __table_args__ = (CheckConstraint("class_level BETWEEN 1 AND 12", name="ck_book_class"),)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    class_level: Mapped[int]
    medium: Mapped[str] = mapped_column(String(40))
    board_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("curriculum_boards.id", ondelete="CASCADE"))
    chapter_count: Mapped[int | None]


class Standard(UUIDAuditBase):
    """A searchable curriculum entry: a learning outcome or a chapter, with its text embedding.

    Outcomes keep their official NAS code (`M707`) when one exists; others get a stable code of ours
    (`LO-C1-MAT-01`, `official_code` false). Chapters are coded `<book code><chapter number>` (`jesc101`).
    """

    __tablename__ = "curriculum_standards"
    __table_args__ = (
        CheckConstraint("class_level BETWEEN 1 AND 12", name="ck_standard_class"),
        CheckConstraint("kind IN ('outcome', 'chapter')", name="ck_standard_kind"),
        Index("ix_standard_filters", "board_id", "class_level", "subject_id"),
        Index("ix_standard_search_text", "search_text", postgresql_using="gin"),
        Index(
            "ix_standard_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )
    code: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    official_code: Mapped[bool]
    text: Mapped[str] = mapped_column(Text)
    keywords: Mapped[str | None] = mapped_column(Text)
    class_level: Mapped[int]
    board_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("curriculum_boards.id", ondelete="CASCADE"))
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("curriculum_subjects.id", ondelete="CASCADE"))
    book_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("curriculum_books.id", ondelete="SET NULL"))
    chapter_number: Mapped[int | None]
    chapter_title: Mapped[str | None] = mapped_column(String(300))
    sources: Mapped[list[str]] = mapped_column(JSONB, default=list)
    content_hash: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[list[float] | None] = mapped_column(embedding_column_type(), nullable=True)
    search_text: Mapped[str] = mapped_column(TSVECTOR, Computed(_SEARCH_TEXT, persisted=True))
    topics: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=sa_text("'[]'::jsonb"))
    topics_source: Mapped[str | None] = mapped_column(String(64))

    subject: Mapped[Subject] = relationship(lazy="joined", innerjoin=True)
    board: Mapped[Board] = relationship(lazy="joined", innerjoin=True)


class Topic(UUIDAuditBase):
    """A section heading or key topic of a chapter, as its source prints it, with its own embedding.

    `class_level` and `subject_id` repeat the chapter's so that filtered topic search needs no join.
    """

    __tablename__ = "curriculum_topics"
    __table_args__ = (
        UniqueConstraint("standard_id", "position", name="uq_curriculum_topics_standard_position"),
        Index("ix_topic_filters", "class_level", "subject_id"),
        Index("ix_topic_search_text", "search_text", postgresql_using="gin"),
        Index(
            "ix_topic_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )
    standard_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("curriculum_standards.id", ondelete="CASCADE"))
    position: Mapped[int]
    topic: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(64))
    class_level: Mapped[int]
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("curriculum_subjects.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[list[float] | None] = mapped_column(embedding_column_type(), nullable=True)
    search_text: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', topic)", persisted=True)
    )
