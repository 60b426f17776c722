"""The OAuth 2.0 authorization server: authorize (login + consent), token, revoke, introspect, metadata, JWKS;
JWT access tokens (RFC 9068) with rotating signing keys, and the guards every `/api/v1` route uses."""
