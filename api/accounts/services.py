"""Users: creation with argon2id password hashes, sign-in, and the admin operations."""

from __future__ import annotations

import asyncio
import datetime
import secrets
import uuid

import msgspec
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.accounts.models import Role, User
from api.accounts.schemas import UserRead, UserUpdate
from api.lib.errors import Conflict, InvalidInput, NotFound
from api.lib.settings import Settings


def password_hasher(settings: Settings) -> PasswordHasher:
    """argon2id with the library's recommended cost; the cheapest parameters only in the test environment."""
    if settings.env == "test":
        return PasswordHasher.from_parameters(profiles.CHEAPEST)
    return PasswordHasher()


class Passwords:
    """Hashes and checks passwords off the event loop (a hash takes a few hundred milliseconds)."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when `password` matches; an unknown user (None) costs the same time and is False."""
        if password_hash is None and self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        try:
            matched = await asyncio.to_thread(
                self._hasher.verify, password_hash or self._dummy_hash or "", password
            )
        except (VerificationError, InvalidHashError):
            return False
        return matched and password_hash is not None


def generate_password() -> str:
    """A random password for `setu users create` and the admin API when none is given (~119 bits)."""
    return secrets.token_urlsafe(15)


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise InvalidInput(f"{email!r} is not an e-mail address")
    return email


def to_read(user: User) -> UserRead:
    return UserRead(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,  # type: ignore[arg-type]
        is_active=user.is_active,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


async def create_user(
    session: AsyncSession,
    passwords: Passwords,
    *,
    email: str,
    role: str,
    password: str | None = None,
    name: str | None = None,
) -> tuple[User, str | None]:
    """Create a user; returns it and the generated password when none was given."""
    Role(role)
    generated = None
    if password is None:
        password = generated = generate_password()
    user = User(
        email=normalise_email(email),
        name=name,
        role=role,
        password_hash=await passwords.hash(password),
        is_active=True,
    )
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise Conflict(f"A user with e-mail {user.email} already exists") from None
    return user, generated


async def authenticate(session: AsyncSession, passwords: Passwords, email: str, password: str) -> User | None:
    """The active user with this e-mail and password, or None (in the same time either way)."""
    user = await session.scalar(select(User).where(User.email == email.strip().lower()))
    ok = await passwords.verify(user.password_hash if user is not None else None, password)
    if user is None or not ok or not user.is_active:
        return None
    user.last_login_at = datetime.datetime.now(datetime.UTC)
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user {user_id}")
    return user


async def find_user(session: AsyncSession, reference: str) -> User:
    """A user by id or e-mail (for the CLI)."""
    try:
        return await get_user(session, uuid.UUID(reference))
    except ValueError:
        pass
    user = await session.scalar(select(User).where(User.email == reference.strip().lower()))
    if user is None:
        raise NotFound(f"No user with e-mail {reference}")
    return user


async def list_users(
    session: AsyncSession, *, limit: int, offset: int, role: str | None = None
) -> tuple[list[User], int]:
    query = select(User)
    if role is not None:
        query = query.where(User.role == role)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    users = (
        await session.scalars(query.order_by(User.created_at, User.id).limit(limit).offset(offset))
    ).all()
    return list(users), int(total or 0)


async def update_user(
    session: AsyncSession, passwords: Passwords, user_id: uuid.UUID, data: UserUpdate
) -> User:
    user = await get_user(session, user_id)
    if not isinstance(data.name, msgspec.UnsetType):
        user.name = data.name
    if isinstance(data.role, str):
        user.role = data.role
    if isinstance(data.is_active, bool):
        user.is_active = data.is_active
    if isinstance(data.password, str):
        user.password_hash = await passwords.hash(data.password)
    await session.flush()
    return user


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Delete a user; their codes and refresh tokens go with them (the caller revokes live grants first)."""
    await session.delete(await get_user(session, user_id))
    await session.flush()
