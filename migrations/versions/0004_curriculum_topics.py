"""Chapter topics: section headings / key topics per chapter, with their source, searchable by text and meaning.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_STATEMENTS = [
    # The chapter row carries its topic list too, so getStandard / listChapters read one row.
    "ALTER TABLE curriculum_standards ADD COLUMN topics JSONB NOT NULL DEFAULT '[]'::jsonb",
    "ALTER TABLE curriculum_standards ADD COLUMN topics_source VARCHAR(64)",
    """
    CREATE TABLE curriculum_topics (
        id UUID NOT NULL,
        standard_id UUID NOT NULL,
        position INTEGER NOT NULL,
        topic TEXT NOT NULL,
        source VARCHAR(64) NOT NULL,
        class_level INTEGER NOT NULL,
        subject_id UUID NOT NULL,
        content_hash VARCHAR(64) NOT NULL,
        embedding VECTOR(384),
        search_text TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', topic)) STORED NOT NULL,
        sa_orm_sentinel INTEGER,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
        CONSTRAINT pk_curriculum_topics PRIMARY KEY (id),
        CONSTRAINT uq_curriculum_topics_standard_position UNIQUE (standard_id, position),
        CONSTRAINT fk_curriculum_topics_standard_id_curriculum_standards FOREIGN KEY(standard_id) REFERENCES curriculum_standards (id) ON DELETE CASCADE,
        CONSTRAINT fk_curriculum_topics_subject_id_curriculum_subjects FOREIGN KEY(subject_id) REFERENCES curriculum_subjects (id) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX ix_topic_embedding ON curriculum_topics USING hnsw (embedding vector_cosine_ops)",
    "CREATE INDEX ix_topic_search_text ON curriculum_topics USING gin (search_text)",
    "CREATE INDEX ix_topic_filters ON curriculum_topics (class_level, subject_id)",
]


def upgrade() -> None:
    for statement in _STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS curriculum_topics")
    op.execute("ALTER TABLE curriculum_standards DROP COLUMN IF EXISTS topics_source")
    op.execute("ALTER TABLE curriculum_standards DROP COLUMN IF EXISTS topics")
