"""What the admin API and `setu apps` accept and return about GPT apps (a secret only once, at creation)."""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Literal

import msgspec

from api.oauth.scopes import DEFAULT_APP_SCOPES, Scope

GrantType = Literal["authorization_code", "refresh_token", "client_credentials"]
ClientTypeName = Literal["confidential", "public"]
RedirectUri = Annotated[
    str,
    msgspec.Meta(
        min_length=10,
        max_length=2000,
        description="Exact callback URL, e.g. https://chatgpt.com/aip/g-<id>/oauth/callback "
        "(https, or http on localhost).",
    ),
]
AppName = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
PerMinute = Annotated[int, msgspec.Meta(ge=1, le=1_000_000, description="Requests per minute.")]


class AppRead(msgspec.Struct):
    id: uuid.UUID
    name: str
    client_id: str
    client_type: ClientTypeName
    token_endpoint_auth_methods: list[str]
    redirect_uris: list[str]
    scopes: list[Scope]
    grant_types: list[GrantType]
    require_pkce: bool
    rate_limit_per_minute: int
    user_rate_limit_per_minute: int
    status: Literal["active", "suspended"]
    created_at: datetime.datetime
    updated_at: datetime.datetime
    last_used_at: datetime.datetime | None


class AppCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: AppName
    redirect_uris: list[RedirectUri] = msgspec.field(default_factory=list)
    scopes: list[Scope] = msgspec.field(default_factory=lambda: list(DEFAULT_APP_SCOPES))
    grant_types: list[GrantType] = msgspec.field(
        default_factory=lambda: ["authorization_code", "refresh_token"]
    )
    client_type: ClientTypeName = "confidential"
    require_pkce: bool = False
    """Always true for public clients. ChatGPT sends no PKCE, so leave it off for a Custom GPT."""
    rate_limit_per_minute: PerMinute | None = None
    user_rate_limit_per_minute: PerMinute | None = None


class AppUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: AppName | msgspec.UnsetType = msgspec.UNSET
    redirect_uris: list[RedirectUri] | msgspec.UnsetType = msgspec.UNSET
    scopes: list[Scope] | msgspec.UnsetType = msgspec.UNSET
    grant_types: list[GrantType] | msgspec.UnsetType = msgspec.UNSET
    require_pkce: bool | msgspec.UnsetType = msgspec.UNSET
    rate_limit_per_minute: PerMinute | msgspec.UnsetType = msgspec.UNSET
    user_rate_limit_per_minute: PerMinute | msgspec.UnsetType = msgspec.UNSET


class AppCredentials(msgspec.Struct):
    app: AppRead
    client_secret: str | None
    """Shown this once (stored only as a hash); None for public clients, which have no secret."""


class AppPage(msgspec.Struct):
    items: list[AppRead]
    total: int
    limit: int
    offset: int
