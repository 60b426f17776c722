"""Access tokens: JWTs per RFC 9068 (`typ: at+jwt`, ES256), minted by the token endpoint and verified locally.

Verification needs no database: the signature is checked with a cached public key, then the claims. A token
that verified once is remembered (bounded, until it expires), so the common case, a client presenting the
same token for its whole lifetime, costs a dictionary lookup. Revocation is checked separately, in Redis.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from api.oauth.keys import ALGORITHM, KeyStore

TOKEN_TYPE = "at+jwt"  # noqa: S105
_MAX_TOKEN_LENGTH = 4096
_CLOCK_SKEW_SECONDS = 60
_CACHE_SIZE = 20_000


class InvalidToken(Exception):
    """The bearer token is malformed, forged, expired or not meant for us; the message says which."""


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    app_id: uuid.UUID
    client_id: str
    user_id: uuid.UUID | None
    """None for tokens from the client-credentials grant (no end user)."""
    scopes: frozenset[str]
    jti: str
    grant_id: str
    """The token family (authorization grant) the token belongs to; revoking the grant revokes the token."""
    issued_at: int
    expires_at: int
    app_rate_limit: int
    user_rate_limit: int
    subject: str


class AccessTokens:
    """Mints and verifies access tokens for one issuer and audience."""

    def __init__(self, keys: KeyStore, *, issuer: str, audience: str, lifetime_seconds: int) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.lifetime_seconds = lifetime_seconds
        self._verified: dict[str, AccessTokenClaims] = {}

    def mint(
        self,
        key: ECKey,
        *,
        app_id: uuid.UUID,
        client_id: str,
        user_id: uuid.UUID | None,
        scopes: list[str],
        grant_id: uuid.UUID,
        rate_limits: tuple[int, int],
        issued_at: int | None = None,
        lifetime_seconds: int | None = None,
    ) -> tuple[str, int]:
        """Sign a new access token; returns it and its lifetime in seconds."""
        now = int(time.time()) if issued_at is None else issued_at
        lifetime = self.lifetime_seconds if lifetime_seconds is None else lifetime_seconds
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": str(user_id) if user_id is not None else client_id,
            "aud": self.audience,
            "client_id": client_id,
            "scope": " ".join(scopes),
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + lifetime,
            "app": str(app_id),
            "sid": str(grant_id),
            "rl": list(rate_limits),
        }
        header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": key.kid}
        return jwt.encode(header, claims, key, algorithms=[ALGORITHM]), lifetime

    async def verify(self, token: str, *, allow_expired: bool = False) -> AccessTokenClaims:
        """The claims of a valid token, or InvalidToken. `allow_expired` is for revocation requests."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at <= now and not allow_expired:
                del self._verified[token]
                raise InvalidToken("the access token has expired")
            return cached
        claims = await self._verify_signature(token)
        parsed = self._check_claims(claims, now, allow_expired=allow_expired)
        if parsed.expires_at > now:
            if len(self._verified) >= _CACHE_SIZE:
                self._evict(now)
            self._verified[token] = parsed
        return parsed

    async def _verify_signature(self, token: str) -> dict[str, Any]:
        if len(token) > _MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise InvalidToken("the access token is not a JWT")
        header = _header(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"JWT algorithm {header.get('alg')!r} is not accepted")
        if str(header.get("typ", "")).lower() not in {TOKEN_TYPE, f"application/{TOKEN_TYPE}"}:
            raise InvalidToken("the JWT is not an access token (typ must be at+jwt)")
        kid = header.get("kid")
        key = await self.keys.verification_key(kid) if isinstance(kid, str) and kid else None
        if key is None:
            raise InvalidToken("the access token was signed by an unknown key")
        try:
            decoded = jwt.decode(token, key, algorithms=[ALGORITHM])
        except (JoseError, ValueError) as error:
            raise InvalidToken("the access token signature is invalid") from error
        return decoded.claims

    def _check_claims(self, claims: dict[str, Any], now: float, *, allow_expired: bool) -> AccessTokenClaims:
        if claims.get("iss") != self.issuer:
            raise InvalidToken("the access token was issued by someone else")
        audience = claims.get("aud")
        if audience != self.audience and not (isinstance(audience, list) and self.audience in audience):
            raise InvalidToken("the access token is meant for another audience")
        try:
            expires_at, issued_at = int(claims["exp"]), int(claims["iat"])
            rate_limits = claims["rl"]
            parsed = AccessTokenClaims(
                app_id=uuid.UUID(claims["app"]),
                client_id=str(claims["client_id"]),
                user_id=None if claims["sub"] == claims["client_id"] else uuid.UUID(claims["sub"]),
                scopes=frozenset(str(claims["scope"]).split()),
                jti=str(claims["jti"]),
                grant_id=str(claims["sid"]),
                issued_at=issued_at,
                expires_at=expires_at,
                app_rate_limit=int(rate_limits[0]),
                user_rate_limit=int(rate_limits[1]),
                subject=str(claims["sub"]),
            )
        except (KeyError, TypeError, ValueError, IndexError):
            raise InvalidToken("the access token lacks required claims") from None
        if expires_at <= now and not allow_expired:
            raise InvalidToken("the access token has expired")
        if issued_at > now + _CLOCK_SKEW_SECONDS:
            raise InvalidToken("the access token is not valid yet")
        return parsed

    def _evict(self, now: float) -> None:
        expired = [token for token, claims in self._verified.items() if claims.expires_at <= now]
        for token in expired:
            del self._verified[token]
        if len(self._verified) >= _CACHE_SIZE:  # all still valid: drop the oldest half
            for token in list(self._verified)[: _CACHE_SIZE // 2]:
                del self._verified[token]


def _header(token: str) -> dict[str, Any]:
    encoded = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidToken("the access token header is malformed") from None
    if not isinstance(header, dict):
        raise InvalidToken("the access token header is malformed")
    return header
