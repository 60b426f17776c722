"""The authorization server's decisions: client authentication, the three grants, revocation, introspection.

Each public method runs in the caller's session and commits what must survive a refusal (a consumed code,
a revoked token family) before raising `OAuthError`, which the controllers turn into RFC 6749 §5.2 bodies.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from prometheus_client import Counter
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.accounts.models import Role, User
from api.apps.models import AppStatus, ClientType, GptApp
from api.lib.ratelimit import Limit, RateLimiter
from api.lib.settings import Settings
from api.oauth.crypto import (
    AUTHORIZATION_CODE_PREFIX,
    REFRESH_TOKEN_PREFIX,
    credential_hash,
    matches_hash,
    new_credential,
)
from api.oauth.denylist import Denylist, app_blocked_key, grant_key, token_key
from api.oauth.keys import KeyStore
from api.oauth.models import AuthorizationCode, RefreshToken
from api.oauth.schemas import Introspection, TokenResponse
from api.oauth.scopes import ADMIN_SCOPE, SCOPES, canonical, parse_scope
from api.oauth.tokens import AccessTokens, InvalidToken

CLIENT_AUTH_FAILURES = Counter(
    "setu_oauth_client_auth_failures_total", "Failed client authentications at the token endpoints."
)
CLIENT_AUTH_FAILURE_WINDOW_SECONDS = 600.0
REPLAY_WINDOW = datetime.timedelta(days=7)
"""How long a used or revoked refresh token is kept so that replaying it revokes its family."""
IP_LIMIT_FACTOR = 5
"""Failures allowed per IP address, as a multiple of the per-client limit."""


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error` code, human `description`, HTTP status and extra headers."""

    def __init__(
        self, error: str, description: str, *, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str | None
    method: str
    """`client_secret_basic`, `client_secret_post` or `none`."""


def client_credentials_from(authorization: str | None, form: dict[str, str]) -> ClientCredentials:
    """Read client credentials from the Basic header or the form body (never both, RFC 6749 §2.3)."""
    if authorization and authorization[:6].lower() == "basic ":
        if "client_secret" in form:
            raise OAuthError(
                "invalid_request", "use either HTTP Basic or client_secret in the body, not both"
            )
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            raw_id, _, raw_secret = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _invalid_client("malformed HTTP Basic credentials", basic=True) from None
        basic_id = unquote_plus(raw_id)
        if form.get("client_id") not in (None, basic_id):
            raise OAuthError("invalid_request", "client_id in the body differs from the Basic credentials")
        return ClientCredentials(basic_id, unquote_plus(raw_secret), "client_secret_basic")
    client_id = form.get("client_id")
    if not client_id:
        raise _invalid_client("client authentication is required (HTTP Basic or client_id/client_secret)")
    secret = form.get("client_secret")
    return ClientCredentials(client_id, secret, "client_secret_post" if secret is not None else "none")


def _invalid_client(description: str, *, basic: bool = False) -> OAuthError:
    headers = {"WWW-Authenticate": 'Basic realm="shikshasetu", charset="UTF-8"'} if basic else {}
    return OAuthError("invalid_client", description, status=401, headers=headers)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _valid_verifier(verifier: str) -> bool:
    """RFC 7636 §4.1: 43-128 characters of [A-Za-z0-9-._~]."""
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    return 43 <= len(verifier) <= 128 and set(verifier) <= allowed


def grantable_scopes(app: GptApp, role: str | None) -> set[str]:
    """What a token for this app and user role may carry: `admin` only for admins or app-level tokens."""
    allowed = set(app.scopes) & set(SCOPES)
    if role is not None and role != Role.ADMIN:
        allowed.discard(ADMIN_SCOPE)
    return allowed


def resolve_scopes(requested: str | None, app: GptApp, role: str | None) -> list[str]:
    """The scopes to grant: the requested ones (all grantable ones when none asked), or `invalid_scope`."""
    names = parse_scope(requested)
    grantable = grantable_scopes(app, role)
    if not names:
        return canonical(grantable)
    unknown = [name for name in names if name not in SCOPES]
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scope {unknown[0]!r}; known: {' '.join(SCOPES)}")
    refused = [name for name in names if name not in app.scopes]
    if refused:
        raise OAuthError("invalid_scope", f"this app may not request {' '.join(refused)}")
    return canonical(set(names) & grantable)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _replay_deadline() -> Any:
    """`expires_at` of a token just revoked: kept for `REPLAY_WINDOW`, never beyond its own expiry."""
    return func.least(RefreshToken.expires_at, _now() + REPLAY_WINDOW)


class AuthorizationServer:
    """Issues, rotates, revokes and introspects tokens for registered GPT apps."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyStore,
        tokens: AccessTokens,
        denylist: Denylist,
        limiter: RateLimiter,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.tokens = tokens
        self.denylist = denylist
        self.limiter = limiter

    # Client authentication

    def failure_limits(self, client_id: str | None, ip: str | None) -> list[Limit]:
        """Failed client authentications allowed per client id and per IP in 10 minutes."""
        limit, period = self.settings.client_auth_failure_limit, CLIENT_AUTH_FAILURE_WINDOW_SECONDS
        limits = []
        if client_id:
            limits.append(Limit("client_auth", f"rl:{{auth}}:client:{client_id[:80]}", limit, period))
        if ip:  # many GPTs share ChatGPT's egress addresses: a looser limit per address
            limits.append(Limit("client_auth", f"rl:{{auth}}:ip:{ip}", limit * IP_LIMIT_FACTOR, period))
        return limits

    async def authenticate_client(
        self, session: AsyncSession, credentials: ClientCredentials, ip: str | None
    ) -> GptApp:
        """The app these credentials prove, or `invalid_client` (counted against the failure limits)."""
        limits = self.failure_limits(credentials.client_id, ip)
        decision = await self.limiter.peek(limits)
        if not decision.allowed:
            raise OAuthError(
                "too_many_requests",
                f"too many failed client authentications; retry after {decision.headers()['Retry-After']} s",
                status=429,
                headers=decision.headers(),
            )
        app = await session.scalar(select(GptApp).where(GptApp.client_id == credentials.client_id))
        basic = credentials.method == "client_secret_basic"
        failure = None
        if app is None:
            failure = "unknown client"
        elif app.client_type == ClientType.CONFIDENTIAL:
            if credentials.client_secret is None:
                failure = "this client must authenticate with its client secret"
            elif not matches_hash(credentials.client_secret, app.client_secret_hash):
                failure = "wrong client secret"
        elif credentials.client_secret:
            failure = "a public client has no secret"
        if failure is not None or app is None:
            CLIENT_AUTH_FAILURES.inc()
            await self.limiter.acquire(limits)
            raise _invalid_client(f"client authentication failed: {failure}", basic=basic)
        if app.status != AppStatus.ACTIVE:
            raise OAuthError("unauthorized_client", "this app is suspended")
        return app

    # Authorization code grant

    async def create_authorization_code(
        self,
        session: AsyncSession,
        app: GptApp,
        user: User,
        *,
        redirect_uri: str,
        scopes: list[str],
        code_challenge: str | None,
    ) -> str:
        code = new_credential(AUTHORIZATION_CODE_PREFIX)
        session.add(
            AuthorizationCode(
                code_hash=credential_hash(code),
                app_id=app.id,
                user_id=user.id,
                grant_id=uuid.uuid4(),
                redirect_uri=redirect_uri,
                scopes=scopes,
                code_challenge=code_challenge,
                expires_at=_now() + datetime.timedelta(seconds=self.settings.authorization_code_ttl_seconds),
            )
        )
        await session.flush()
        return code

    async def exchange_code(
        self,
        session: AsyncSession,
        app: GptApp,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None,
    ) -> tuple[TokenResponse, uuid.UUID]:
        """RFC 6749 §4.1.3 (+ RFC 7636). A second use of a code revokes every token issued from it."""
        self._require_grant(app, "authorization_code")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        row = await session.scalar(
            select(AuthorizationCode)
            .where(AuthorizationCode.code_hash == credential_hash(code))
            .with_for_update()
        )
        if row is None or row.app_id != app.id:
            raise OAuthError("invalid_grant", "unknown authorization code")
        if row.used_at is not None:
            await self.revoke_grant(session, app.id, row.grant_id)
            await session.commit()
            raise OAuthError(
                "invalid_grant", "the authorization code was already used; tokens issued from it are revoked"
            )
        row.used_at = _now()
        failure = self._code_failure(row, redirect_uri, code_verifier)
        if failure is not None:
            await session.commit()  # the code is spent: no second guess at the verifier
            raise OAuthError("invalid_grant", failure)
        user = await session.get(User, row.user_id)
        if user is None or not user.is_active:
            await session.commit()
            raise OAuthError("invalid_grant", "the user is no longer active")
        scopes = canonical(set(row.scopes) & grantable_scopes(app, user.role))
        response = await self.issue_tokens(session, app, user.id, scopes, row.grant_id, refresh=True)
        return response, user.id

    def _code_failure(
        self, row: AuthorizationCode, redirect_uri: str | None, verifier: str | None
    ) -> str | None:
        if row.expires_at <= _now():
            return "the authorization code has expired"
        if redirect_uri != row.redirect_uri:
            return "redirect_uri does not match the one in the authorization request"
        if row.code_challenge is not None:
            if not verifier:
                return "code_verifier is required (PKCE)"
            if not _valid_verifier(verifier) or not hmac.compare_digest(s256(verifier), row.code_challenge):
                return "code_verifier does not match the code challenge (PKCE)"
        elif verifier:
            return "code_verifier sent but the authorization request had no code_challenge"
        return None

    # Refresh token grant

    async def refresh(
        self, session: AsyncSession, app: GptApp, refresh_token: str | None, scope: str | None
    ) -> tuple[TokenResponse, uuid.UUID]:
        """RFC 6749 §6 with rotation: every use returns a new refresh token; replaying a used one revokes
        the whole family (it has leaked, or the client is confused: either way nobody keeps it)."""
        self._require_grant(app, "refresh_token")
        if not refresh_token:
            raise OAuthError("invalid_request", "refresh_token is required")
        row = await session.scalar(
            select(RefreshToken)
            .where(RefreshToken.token_hash == credential_hash(refresh_token))
            .with_for_update()
        )
        if row is None or row.app_id != app.id:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if row.used_at is not None or row.revoked_at is not None:
            await self.revoke_grant(session, app.id, row.family_id)
            await session.commit()
            raise OAuthError(
                "invalid_grant",
                "the refresh token was already used or revoked; its whole grant is now revoked",
            )
        if row.expires_at <= _now():
            raise OAuthError("invalid_grant", "the refresh token has expired")
        user = await session.get(User, row.user_id)
        if user is None or not user.is_active:
            raise OAuthError("invalid_grant", "the user is no longer active")
        granted = set(row.scopes) & grantable_scopes(app, user.role)
        requested = parse_scope(scope)
        if requested and not set(requested) <= set(row.scopes):
            raise OAuthError("invalid_scope", "a refresh may only narrow the scopes of the original grant")
        scopes = canonical(set(requested) & granted if requested else granted)
        row.used_at = _now()
        row.expires_at = min(row.expires_at, row.used_at + REPLAY_WINDOW)
        response = await self.issue_tokens(session, app, user.id, scopes, row.family_id, refresh=True)
        return response, user.id

    # Client credentials grant

    async def client_credentials(
        self, session: AsyncSession, app: GptApp, scope: str | None
    ) -> TokenResponse:
        """RFC 6749 §4.4: a token for the app itself (no end user, no refresh token)."""
        self._require_grant(app, "client_credentials")
        if app.client_type != ClientType.CONFIDENTIAL:
            raise OAuthError("unauthorized_client", "a public client cannot use client_credentials")
        scopes = resolve_scopes(scope, app, role=None)
        return await self.issue_tokens(session, app, None, scopes, uuid.uuid4(), refresh=False)

    # Revocation and introspection

    async def revoke(self, session: AsyncSession, app: GptApp, token: str) -> None:
        """RFC 7009: revoke a refresh token (with its whole grant) or an access token of this app.
        Unknown tokens and other apps' tokens are ignored, as the RFC asks."""
        if token.startswith(REFRESH_TOKEN_PREFIX):
            row = await session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == credential_hash(token))
            )
            if row is not None and row.app_id == app.id:
                await self.revoke_grant(session, app.id, row.family_id)
            return
        try:
            claims = await self.tokens.verify(token, allow_expired=True)
        except InvalidToken:
            return
        if claims.client_id == app.client_id:
            seconds_left = claims.expires_at - int(_now().timestamp())
            await self.denylist.revoke_token(claims.app_id, claims.jti, seconds_left)

    async def introspect(self, session: AsyncSession, app: GptApp, token: str) -> Introspection:
        """RFC 7662, for the app's own tokens; anything else is simply `{"active": false}`."""
        inactive = Introspection(active=False)
        if token.startswith(REFRESH_TOKEN_PREFIX):
            row = await session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == credential_hash(token))
            )
            if (
                row is None
                or row.app_id != app.id
                or row.used_at is not None
                or row.revoked_at is not None
                or row.expires_at <= _now()
            ):
                return inactive
            return Introspection(
                active=True,
                scope=" ".join(row.scopes),
                client_id=app.client_id,
                token_type="refresh_token",  # noqa: S106
                exp=int(row.expires_at.timestamp()),
                iat=int(row.created_at.timestamp()),
                sub=str(row.user_id),
                iss=self.tokens.issuer,
            )
        try:
            claims = await self.tokens.verify(token)
        except InvalidToken:
            return inactive
        if claims.client_id != app.client_id:
            return inactive
        blocks = [
            app_blocked_key(claims.app_id),
            token_key(claims.app_id, claims.jti),
            grant_key(claims.app_id, claims.grant_id),
        ]
        if await self.denylist.redis.exists(*blocks):
            return inactive
        return Introspection(
            active=True,
            scope=" ".join(sorted(claims.scopes, key=list(SCOPES).index)),
            client_id=claims.client_id,
            token_type="Bearer",  # noqa: S106
            exp=claims.expires_at,
            iat=claims.issued_at,
            sub=claims.subject,
            aud=self.tokens.audience,
            iss=self.tokens.issuer,
            jti=claims.jti,
        )

    async def revoke_grant(self, session: AsyncSession, app_id: uuid.UUID, grant_id: uuid.UUID) -> None:
        """Revoke a token family: its refresh tokens in the database, its access tokens in Redis."""
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == grant_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=_now(), expires_at=_replay_deadline())
        )
        await self.denylist.revoke_grants(app_id, [grant_id])

    async def revoke_user_grants(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        """Revoke every live grant of a user (deactivated or deleted by an admin)."""
        families = (
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=_now(), expires_at=_replay_deadline())
                .returning(RefreshToken.app_id, RefreshToken.family_id)
            )
        ).all()
        by_app: dict[uuid.UUID, list[uuid.UUID]] = {}
        for app_id, family_id in families:
            by_app.setdefault(app_id, []).append(family_id)
        for app_id, grant_ids in by_app.items():
            await self.denylist.revoke_grants(app_id, grant_ids)

    # Issuing

    def _require_grant(self, app: GptApp, grant_type: str) -> None:
        if grant_type not in app.grant_types:
            raise OAuthError("unauthorized_client", f"this app may not use the {grant_type} grant")

    async def issue_tokens(
        self,
        session: AsyncSession,
        app: GptApp,
        user_id: uuid.UUID | None,
        scopes: list[str],
        grant_id: uuid.UUID,
        *,
        refresh: bool,
    ) -> TokenResponse:
        """Mint an access token (and a refresh token when asked and allowed) and commit the session."""
        key = await self.keys.signing_key(session)
        access_token, lifetime = self.tokens.mint(
            key,
            app_id=app.id,
            client_id=app.client_id,
            user_id=user_id,
            scopes=scopes,
            grant_id=grant_id,
            rate_limits=(app.rate_limit_per_minute, app.user_rate_limit_per_minute),
        )
        refresh_token = None
        now = _now()
        if refresh and user_id is not None and "refresh_token" in app.grant_types:
            refresh_token = new_credential(REFRESH_TOKEN_PREFIX)
            session.add(
                RefreshToken(
                    token_hash=credential_hash(refresh_token),
                    family_id=grant_id,
                    app_id=app.id,
                    user_id=user_id,
                    scopes=scopes,
                    expires_at=now + datetime.timedelta(days=self.settings.refresh_token_ttl_days),
                )
            )
        await session.commit()  # the app's last use is recorded by the audit flush, in batches
        return TokenResponse(
            access_token=access_token,
            token_type="Bearer",  # noqa: S106
            expires_in=lifetime,
            scope=" ".join(scopes),
            refresh_token=refresh_token,
        )
