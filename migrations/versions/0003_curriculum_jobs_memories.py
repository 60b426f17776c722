"""Curriculum (boards, subjects, books, standards with embeddings), durable jobs, memory bank.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_STATEMENTS = [
    """
    CREATE TABLE curriculum_boards (
        id UUID NOT NULL,
        code VARCHAR(32) NOT NULL,
        name VARCHAR(200) NOT NULL,
        sa_orm_sentinel INTEGER,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
        CONSTRAINT pk_curriculum_boards PRIMARY KEY (id),
        CONSTRAINT uq_curriculum_boards_code UNIQUE (code)
    )
    """,
    """
    CREATE TABLE curriculum_subjects (
        id UUID NOT NULL,
        slug VARCHAR(100) NOT NULL,
        name VARCHAR(200) NOT NULL,
        sa_orm_sentinel INTEGER,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
        CONSTRAINT pk_curriculum_subjects PRIMARY KEY (id),
        CONSTRAINT uq_curriculum_subjects_slug UNIQUE (slug)
    )
    """,
    """
    CREATE TABLE curriculum_books (
        id UUID NOT NULL,
        code VARCHAR(32) NOT NULL,
        title VARCHAR(300) NOT NULL,
        class_level INTEGER NOT NULL,
        medium VARCHAR(40) NOT NULL,
        board_id UUID NOT NULL,
        chapter_count INTEGER,
        sa_orm_sentinel INTEGER,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
        CONSTRAINT pk_curriculum_books PRIMARY KEY (id),
        CONSTRAINT ck_curriculum_books_ck_book_class CHECK (class_level BETWEEN 1 AND 12),
        CONSTRAINT uq_curriculum_books_code UNIQUE (code),
        CONSTRAINT fk_curriculum_books_board_id_curriculum_boards FOREIGN KEY(board_id) REFERENCES curriculum_boards (id) ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE curriculum_standards (
        id UUID NOT NULL,
        code VARCHAR(64) NOT NULL,
        kind VARCHAR(16) NOT NULL,
        official_code BOOLEAN NOT NULL,
        text TEXT NOT NULL,
        keywords TEXT,
        class_level INTEGER NOT NULL,
        board_id UUID NOT NULL,
        subject_id UUID NOT NULL,
        book_id UUID,
        chapter_number INTEGER,
        chapter_title VARCHAR(300),
        sources JSONB NOT NULL,
        content_hash VARCHAR(64) NOT NULL,
        embedding VECTOR(384),
        search_text TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', coalesce(text, '') || ' ' || coalesce(keywords, ''))) STORED NOT NULL,
        sa_orm_sentinel INTEGER,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
        CONSTRAINT pk_curriculum_standards PRIMARY KEY (id),
        CONSTRAINT ck_curriculum_standards_ck_standard_class CHECK (class_level BETWEEN 1 AND 12),
        CONSTRAINT ck_curriculum_standards_ck_standard_kind CHECK (kind IN ('outcome', 'chapter')),
        CONSTRAINT uq_curriculum_standards_code UNIQUE (code),
        CONSTRAINT fk_curriculum_standards_board_id_curriculum_boards FOREIGN KEY(board_id) REFERENCES curriculum_boards (id) ON DELETE CASCADE,
        CONSTRAINT fk_curriculum_standards_subject_id_curriculum_subjects FOREIGN KEY(subject_id) REFERENCES curriculum_subjects (id) ON DELETE CASCADE,
        CONSTRAINT fk_curriculum_standards_book_id_curriculum_books FOREIGN KEY(book_id) REFERENCES curriculum_books (id) ON DELETE SET NULL
    )
    """,
    """
    CREATE INDEX ix_standard_embedding ON curriculum_standards USING hnsw (embedding vector_cosine_ops)
    """,
    """
    CREATE INDEX ix_standard_filters ON curriculum_standards (board_id, class_level, subject_id)
    """,
    """
    CREATE INDEX ix_standard_search_text ON curriculum_standards USING gin (search_text)
    """,
    """
    CREATE TABLE jobs (
        id UUID NOT NULL,
        kind VARCHAR(64) NOT NULL,
        payload JSONB NOT NULL,
        status VARCHAR(16) NOT NULL,
        attempts INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        run_after TIMESTAMP WITH TIME ZONE NOT NULL,
        locked_until TIMESTAMP WITH TIME ZONE,
        last_error TEXT,
        result JSONB,
        finished_at TIMESTAMP WITH TIME ZONE,
        app_id UUID,
        user_id UUID,
        sa_orm_sentinel INTEGER,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
        CONSTRAINT pk_jobs PRIMARY KEY (id),
        CONSTRAINT ck_jobs_ck_job_status CHECK (status IN ('queued', 'running', 'succeeded', 'failed'))
    )
    """,
    """
    CREATE INDEX ix_jobs_claimable ON jobs (run_after) WHERE status = 'queued'
    """,
    """
    CREATE INDEX ix_jobs_running_lease ON jobs (locked_until) WHERE status = 'running'
    """,
    """
    CREATE TABLE memories (
        id UUID NOT NULL,
        app_id UUID NOT NULL,
        user_id UUID,
        content TEXT NOT NULL,
        tags VARCHAR(64)[] NOT NULL,
        metadata JSONB NOT NULL,
        status VARCHAR(16) NOT NULL,
        idempotency_key VARCHAR(200),
        request_hash VARCHAR(64) NOT NULL,
        job_id UUID,
        embedding VECTOR(384),
        sa_orm_sentinel INTEGER,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
        CONSTRAINT pk_memories PRIMARY KEY (id),
        CONSTRAINT ck_memories_ck_memory_status CHECK (status IN ('pending', 'ready', 'failed'))
    )
    """,
    """
    CREATE INDEX ix_memories_owner_recent ON memories (app_id, user_id, created_at DESC, id DESC)
    """,
    """
    CREATE INDEX ix_memories_pending ON memories (updated_at) WHERE status = 'pending'
    """,
    """
    CREATE INDEX ix_memories_tags ON memories USING gin (tags)
    """,
    """
    CREATE UNIQUE INDEX uq_memory_idempotency ON memories (app_id, user_id, idempotency_key) NULLS NOT DISTINCT WHERE idempotency_key IS NOT NULL
    """,
]


def upgrade() -> None:
    for statement in _STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in (
        "memories",
        "jobs",
        "curriculum_standards",
        "curriculum_books",
        "curriculum_subjects",
        "curriculum_boards",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
