"""What the admin API and `setu users` accept and return about users (never a password hash)."""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Literal

import msgspec

RoleName = Literal["admin", "teacher", "student"]
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$", description="Login e-mail address."
    ),
]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=256, description="At least 10 characters.")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class UserRead(msgspec.Struct):
    id: uuid.UUID
    email: str
    name: str | None
    role: RoleName
    is_active: bool
    created_at: datetime.datetime
    last_login_at: datetime.datetime | None


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    role: RoleName
    name: Name | None = None
    password: Password | None = None
    """Leave out to have one generated and returned once."""


class UserCreated(msgspec.Struct):
    user: UserRead
    generated_password: str | None
    """Only when the password was generated: shown this once, stored only as an argon2id hash."""


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Name | msgspec.UnsetType | None = msgspec.UNSET
    role: RoleName | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET
    password: Password | msgspec.UnsetType = msgspec.UNSET


class UserPage(msgspec.Struct):
    items: list[UserRead]
    total: int
    limit: int
    offset: int
