"""End users who sign in on our login page and on whose behalf a GPT acts."""

from __future__ import annotations

import datetime
import enum

from advanced_alchemy.base import UUIDAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column


class Role(enum.StrEnum):
    ADMIN = "admin"
    TEACHER = "teacher"
    STUDENT = "student"


class User(UUIDAuditBase):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'teacher', 'student')", name="role"),)

    email: Mapped[str] = mapped_column(String(320), unique=True)
    """Stored lower-cased; the login name."""
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(default=True)
    last_login_at: Mapped[datetime.datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
