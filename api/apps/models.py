"""A registered GPT app is an OAuth client: who may ask for tokens, for which scopes, from which callbacks."""

from __future__ import annotations

import datetime
import enum

from advanced_alchemy.base import UUIDAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import CheckConstraint, String, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column


class AppStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class ClientType(enum.StrEnum):
    CONFIDENTIAL = "confidential"
    """Has a secret (a Custom GPT: ChatGPT keeps the secret server-side)."""
    PUBLIC = "public"
    """No secret (native or browser apps): PKCE is always required."""


class GptApp(UUIDAuditBase):
    __tablename__ = "gpt_apps"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
        CheckConstraint("client_type IN ('confidential', 'public')", name="client_type"),
        CheckConstraint(
            "(client_type = 'public') = (client_secret_hash IS NULL)", name="secret_iff_confidential"
        ),
    )

    name: Mapped[str] = mapped_column(String(120))
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    """SHA-256 of the (high-entropy, random) secret; the secret itself is shown once and never stored."""
    client_type: Mapped[str] = mapped_column(String(16), default=ClientType.CONFIDENTIAL)
    redirect_uris: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    grant_types: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    require_pkce: Mapped[bool] = mapped_column(default=False)
    rate_limit_per_minute: Mapped[int] = mapped_column()
    user_rate_limit_per_minute: Mapped[int] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=AppStatus.ACTIVE)
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
