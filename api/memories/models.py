"""The memory table: one row per thing a GPT remembered for one end user of one app."""

from __future__ import annotations

import uuid
from typing import Any

from advanced_alchemy.base import UUIDAuditBase
from sqlalchemy import CheckConstraint, Index, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from api.lib.vectors import embedding_column_type

MEMORY_STATUSES = ("pending", "ready", "failed")


class Memory(UUIDAuditBase):
    """Owned by (app, user); `user_id` is null for an app's own memories (client-credentials tokens).

    Search scans one owner's rows exactly (at most `SETU_MEMORY_MAX_PER_USER`), so no ANN index: an HNSW
    scan filtered afterwards by owner could silently return fewer hits.
    """

    __tablename__ = "memories"
    __table_args__ = (
        CheckConstraint(f"status IN {MEMORY_STATUSES!r}", name="ck_memory_status"),
        Index(
            "uq_memory_idempotency",
            "app_id",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_nulls_not_distinct=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_memories_owner_recent", "app_id", "user_id", text("created_at DESC"), text("id DESC")),
        Index("ix_memories_tags", "tags", postgresql_using="gin"),
        Index("ix_memories_pending", "updated_at", postgresql_where=text("status = 'pending'")),
    )
    app_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID | None]
    content: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID | None]
    embedding: Mapped[list[float] | None] = mapped_column(
        embedding_column_type(), nullable=True, deferred=True
    )
    """Never loaded with the row (lists and reads do not show it; 384 numbers to decode per row)."""
