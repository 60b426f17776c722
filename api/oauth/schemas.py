"""Bodies of the token, introspection and metadata endpoints (RFC 6749 §5.1, RFC 7662, RFC 8414)."""

from __future__ import annotations

import msgspec


class TokenResponse(msgspec.Struct, omit_defaults=True):
    access_token: str
    token_type: str
    """Always `Bearer`."""
    expires_in: int
    scope: str
    refresh_token: str | None = None


class TokenError(msgspec.Struct, omit_defaults=True):
    error: str
    error_description: str | None = None


class Introspection(msgspec.Struct, omit_defaults=True):
    active: bool
    scope: str | None = None
    client_id: str | None = None
    token_type: str | None = None
    exp: int | None = None
    iat: int | None = None
    sub: str | None = None
    aud: str | None = None
    iss: str | None = None
    jti: str | None = None


class ServerMetadata(msgspec.Struct):
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    revocation_endpoint: str
    introspection_endpoint: str
    scopes_supported: list[str]
    response_types_supported: list[str]
    response_modes_supported: list[str]
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
    code_challenge_methods_supported: list[str]
    authorization_response_iss_parameter_supported: bool
    service_documentation: str


class JsonWebKeySet(msgspec.Struct):
    keys: list[dict[str, object]]
