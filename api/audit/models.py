"""One row per token decision or API call. No foreign keys: an app's history outlives the app."""

from __future__ import annotations

import datetime
import uuid

from advanced_alchemy.base import IdentityBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Double, Index, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column


class AuditEvent(IdentityBase):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_app_id_occurred_at", "app_id", "occurred_at"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )

    occurred_at: Mapped[datetime.datetime] = mapped_column(DateTimeUTC(timezone=True))
    kind: Mapped[str] = mapped_column(String(16))
    """`token` (a decision of the token endpoint) or `api` (an `/api/v1` call)."""
    app_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    client_id: Mapped[str | None] = mapped_column(String(64), default=None)
    user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    operation: Mapped[str] = mapped_column(String(100))
    """The operation id of the API route, or `token.<grant_type>`."""
    status: Mapped[int] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(String(64), default=None)
    """A machine-readable reason for a refusal (`invalid_grant`, `rate_limited`...), never a secret."""
    latency_ms: Mapped[float] = mapped_column(Double)
    request_id: Mapped[str | None] = mapped_column(String(128), default=None)
