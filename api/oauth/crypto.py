"""Random credentials, their hashes, and encryption at rest of the JWT signing keys.

Every credential we hand out is prefixed (so a leaked one is recognisable) and 256 bits of randomness, so a
plain SHA-256 is a safe way to store it: there is nothing to brute-force. Passwords, chosen by people, get
argon2id instead (`api.accounts.services`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.lib.settings import Settings, SettingsError

CLIENT_ID_PREFIX = "setu_app_"
CLIENT_SECRET_PREFIX = "setu_cs_"  # noqa: S105 (a prefix, not a secret)
REFRESH_TOKEN_PREFIX = "setu_rt_"  # noqa: S105
AUTHORIZATION_CODE_PREFIX = "setu_ac_"


def new_credential(prefix: str) -> str:
    """A fresh credential: `prefix` + 43 URL-safe characters (256 random bits)."""
    return prefix + secrets.token_urlsafe(32)


def new_client_id() -> str:
    return CLIENT_ID_PREFIX + secrets.token_hex(10)


def credential_hash(credential: str) -> str:
    """How a credential is stored and looked up: hex SHA-256."""
    return hashlib.sha256(credential.encode()).hexdigest()


def matches_hash(credential: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented credential against its stored hash."""
    return stored_hash is not None and hmac.compare_digest(credential_hash(credential), stored_hash)


class SecretBox:
    """AES-256-GCM under a key derived from the configured secret; `v1.` + base64(nonce + ciphertext)."""

    _VERSION = "v1."

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(hashlib.sha256(b"setu signing keys\x00" + secret).digest())

    def seal(self, plaintext: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, self._VERSION.encode())
        return self._VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str) -> bytes:
        if not token.startswith(self._VERSION):
            raise ValueError("unknown sealed-secret format")
        raw = base64.urlsafe_b64decode(token[len(self._VERSION) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], self._VERSION.encode())
        except InvalidTag:
            raise ValueError(
                "cannot decrypt a signing key: SETU_SIGNING_KEY_SECRET differs from the one that encrypted it"
            ) from None


def key_encryption_secret(settings: Settings) -> bytes:
    """`SETU_SIGNING_KEY_SECRET`, or a random secret kept in the data directory (created on first use)."""
    if settings.signing_key_secret is not None:
        return settings.signing_key_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / "signing-key-secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(32).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker created it first
        return path.read_bytes().strip()
    except OSError as error:
        raise SettingsError(
            f"SETU_SIGNING_KEY_SECRET: not set, and {path} cannot be created ({error})"
        ) from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(secret)
    return secret
