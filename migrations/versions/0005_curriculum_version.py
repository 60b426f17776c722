"""Curriculum version: one number every write to a curriculum table bumps (statement triggers), so each API
process can tell cheaply that its in-memory curriculum answers are stale (api/curriculum/cache.py).

A later migration that adds a `curriculum_*` table should attach `curriculum_version_bump` to it as well.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = (
    "curriculum_boards",
    "curriculum_subjects",
    "curriculum_books",
    "curriculum_standards",
    "curriculum_topics",
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE curriculum_version (
            id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
            version BIGINT NOT NULL DEFAULT 1,
            changed_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("INSERT INTO curriculum_version DEFAULT VALUES")
    op.execute(
        """
        CREATE FUNCTION curriculum_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE curriculum_version SET version = version + 1, changed_at = now();
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION curriculum_version_bump()"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_version ON {table}")
    op.execute("DROP FUNCTION IF EXISTS curriculum_version_bump()")
    op.execute("DROP TABLE IF EXISTS curriculum_version")
