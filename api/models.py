"""Imports every domain's models so Alembic and the tests see the whole schema."""

from api.accounts.models import User
from api.apps.models import GptApp
from api.audit.models import AuditEvent
from api.oauth.models import AuthorizationCode, RefreshToken, SigningKey

__all__ = ["AuditEvent", "AuthorizationCode", "GptApp", "RefreshToken", "SigningKey", "User"]
