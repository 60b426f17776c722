"""The GPT app registry: create (secret shown once), update, suspend/resume, delete, reset the secret."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from urllib.parse import urlsplit

import msgspec
import structlog
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.apps.models import AppStatus, ClientType, GptApp
from api.apps.schemas import AppCreate, AppRead, AppUpdate
from api.lib.errors import InvalidInput, NotFound
from api.lib.settings import Settings
from api.oauth.crypto import CLIENT_SECRET_PREFIX, credential_hash, new_client_id, new_credential
from api.oauth.denylist import Denylist
from api.oauth.scopes import canonical

log = structlog.get_logger("api.apps")

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}

ADMIN_TOOLS_CLIENT_ID = "setu-admin-tools"
"""A built-in public client (PKCE, loopback callback, scope `admin` only) through which an administrator's
e-mail and password get an admin token over HTTP, for tools such as `make loadtest HOST=...`. Only admin
accounts can grant its one scope; it is registered the first time someone starts signing in through it."""
ADMIN_TOOLS_CALLBACK = "http://127.0.0.1/setu-admin-tools/callback"


def token_endpoint_auth_methods(app: GptApp) -> list[str]:
    if app.client_type == ClientType.PUBLIC:
        return ["none"]
    return ["client_secret_basic", "client_secret_post"]


def to_read(app: GptApp) -> AppRead:
    return AppRead(
        id=app.id,
        name=app.name,
        client_id=app.client_id,
        client_type=app.client_type,  # type: ignore[arg-type]
        token_endpoint_auth_methods=token_endpoint_auth_methods(app),
        redirect_uris=list(app.redirect_uris),
        scopes=list(app.scopes),  # type: ignore[arg-type]
        grant_types=list(app.grant_types),  # type: ignore[arg-type]
        require_pkce=app.require_pkce,
        rate_limit_per_minute=app.rate_limit_per_minute,
        user_rate_limit_per_minute=app.user_rate_limit_per_minute,
        status=app.status,  # type: ignore[arg-type]
        created_at=app.created_at,
        updated_at=app.updated_at,
        last_used_at=app.last_used_at,
    )


def validate_redirect_uri(uri: str) -> str:
    """An absolute https URL (http only on a loopback host), no fragment, no wildcard; matched exactly."""
    parts = urlsplit(uri)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise InvalidInput(f"redirect URI {uri!r} must be an absolute https URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise InvalidInput(f"redirect URI {uri!r} must use https (http is allowed only on localhost)")
    if parts.fragment or "#" in uri:
        raise InvalidInput(f"redirect URI {uri!r} must not contain a fragment")
    if "*" in uri:
        raise InvalidInput(f"redirect URI {uri!r} must not contain wildcards; register each URL exactly")
    return uri


def _check(app: GptApp) -> None:
    """Rules that span fields, applied after every create and update."""
    grants = set(app.grant_types)
    if not grants:
        raise InvalidInput("grant_types must name at least one grant")
    if "refresh_token" in grants and "authorization_code" not in grants:
        raise InvalidInput("the refresh_token grant needs the authorization_code grant")
    if "authorization_code" in grants and not app.redirect_uris:
        raise InvalidInput("the authorization_code grant needs at least one redirect URI")
    if app.client_type == ClientType.PUBLIC and "client_credentials" in grants:
        raise InvalidInput("a public client (no secret) cannot use the client_credentials grant")
    if not app.scopes:
        raise InvalidInput("scopes must name at least one scope")
    for uri in app.redirect_uris:
        validate_redirect_uri(uri)


async def create_app(session: AsyncSession, settings: Settings, data: AppCreate) -> tuple[GptApp, str | None]:
    """Register an app; returns it and its client secret (None for a public client), shown only now."""
    public = data.client_type == ClientType.PUBLIC.value
    secret = None if public else new_credential(CLIENT_SECRET_PREFIX)
    app = GptApp(
        id=uuid.uuid4(),
        name=data.name.strip(),
        client_id=new_client_id(),
        client_secret_hash=credential_hash(secret) if secret is not None else None,
        client_type=data.client_type,
        redirect_uris=list(dict.fromkeys(data.redirect_uris)),
        scopes=canonical(data.scopes),
        grant_types=list(dict.fromkeys(data.grant_types)),
        require_pkce=data.require_pkce or public,
        rate_limit_per_minute=data.rate_limit_per_minute or settings.rate_limit_app_per_minute,
        user_rate_limit_per_minute=data.user_rate_limit_per_minute or settings.rate_limit_user_per_minute,
        status=AppStatus.ACTIVE,
    )
    _check(app)
    session.add(app)
    await session.flush()
    return app, secret


async def ensure_admin_tools_app(session: AsyncSession, settings: Settings) -> GptApp:
    """The built-in admin tools client (see `ADMIN_TOOLS_CLIENT_ID`), registered now when missing; safe when
    several requests race (one insert wins, the others find it). Commits when it had to register it."""
    app = await session.scalar(select(GptApp).where(GptApp.client_id == ADMIN_TOOLS_CLIENT_ID))
    if app is not None:
        return app
    await session.execute(
        insert(GptApp)
        .values(
            id=uuid.uuid4(),
            name="ShikshaSetu admin tools",
            client_id=ADMIN_TOOLS_CLIENT_ID,
            client_secret_hash=None,
            client_type=ClientType.PUBLIC.value,
            redirect_uris=[ADMIN_TOOLS_CALLBACK],
            scopes=["admin"],
            grant_types=["authorization_code"],
            require_pkce=True,
            rate_limit_per_minute=settings.rate_limit_app_per_minute,
            user_rate_limit_per_minute=settings.rate_limit_user_per_minute,
            status=AppStatus.ACTIVE.value,
        )
        .on_conflict_do_nothing(index_elements=["client_id"])
    )
    await session.commit()
    log.info("registered the built-in admin tools client", client_id=ADMIN_TOOLS_CLIENT_ID)
    return await session.scalar(select(GptApp).where(GptApp.client_id == ADMIN_TOOLS_CLIENT_ID))  # type: ignore[return-value]


async def get_app(session: AsyncSession, app_id: uuid.UUID) -> GptApp:
    app = await session.get(GptApp, app_id)
    if app is None:
        raise NotFound(f"No GPT app {app_id}")
    return app


async def find_app(session: AsyncSession, reference: str) -> GptApp:
    """An app by id or client id (the CLI accepts either)."""
    try:
        return await get_app(session, uuid.UUID(reference))
    except ValueError:
        pass
    app = await session.scalar(select(GptApp).where(GptApp.client_id == reference.strip()))
    if app is None:
        raise NotFound(f"No GPT app with client id {reference}")
    return app


async def list_apps(session: AsyncSession, *, limit: int, offset: int) -> tuple[list[GptApp], int]:
    total = await session.scalar(select(func.count()).select_from(GptApp))
    apps = (
        await session.scalars(
            select(GptApp).order_by(GptApp.created_at, GptApp.id).limit(limit).offset(offset)
        )
    ).all()
    return list(apps), int(total or 0)


async def update_app(session: AsyncSession, app_id: uuid.UUID, data: AppUpdate) -> GptApp:
    app = await get_app(session, app_id)
    for field in data.__struct_fields__:
        value = getattr(data, field)
        if value is msgspec.UNSET:
            continue
        if field == "scopes":
            value = canonical(value)
        elif field in {"redirect_uris", "grant_types"}:
            value = list(dict.fromkeys(value))
        elif field == "name":
            value = value.strip()
        setattr(app, field, value)
    if app.client_type == ClientType.PUBLIC:
        app.require_pkce = True
    _check(app)
    await session.flush()
    return app


async def suspend_app(session: AsyncSession, denylist: Denylist, app_id: uuid.UUID) -> GptApp:
    """Refuse the app's tokens at once and every new token request until it is resumed."""
    app = await get_app(session, app_id)
    app.status = AppStatus.SUSPENDED
    await session.flush()
    await _best_effort(denylist.block_app(app.id), "suspend", app.id)
    return app


async def resume_app(session: AsyncSession, denylist: Denylist, app_id: uuid.UUID) -> GptApp:
    app = await get_app(session, app_id)
    app.status = AppStatus.ACTIVE
    await session.flush()
    await _best_effort(denylist.unblock_app(app.id), "resume", app.id)
    return app


async def delete_app(session: AsyncSession, denylist: Denylist, app_id: uuid.UUID) -> None:
    """Delete the app with its codes and refresh tokens (its audit history stays); its access tokens stop."""
    app = await get_app(session, app_id)
    await session.delete(app)
    await session.flush()
    await _best_effort(denylist.block_app(app_id, deleted=True), "delete", app_id)


async def reset_secret(session: AsyncSession, app_id: uuid.UUID) -> tuple[GptApp, str]:
    """Replace the client secret (the old one stops working at once); returns the new one, shown only now."""
    app = await get_app(session, app_id)
    if app.client_type == ClientType.PUBLIC:
        raise InvalidInput("a public client has no secret to reset")
    secret = new_credential(CLIENT_SECRET_PREFIX)
    app.client_secret_hash = credential_hash(secret)
    await session.flush()
    return app, secret


async def suspended_app_ids(session: AsyncSession) -> list[uuid.UUID]:
    return list((await session.scalars(select(GptApp.id).where(GptApp.status == AppStatus.SUSPENDED))).all())


async def _best_effort(marker: Awaitable[None], action: str, app_id: uuid.UUID) -> None:
    """Redis markers make a change take effect at once; without Redis the API catches up within 30 s."""
    try:
        await marker
    except (RedisError, OSError) as error:
        log.warning(
            "could not update the app's redis marker", action=action, app_id=str(app_id), error=str(error)
        )
