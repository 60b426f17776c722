"""First start of a fresh installation: a first admin and a demo GPT app, their secrets printed once."""

from __future__ import annotations

from sqlalchemy import func, select

from api.accounts.models import User
from api.accounts.services import Passwords, create_user, password_hasher
from api.apps.schemas import AppCreate
from api.apps.services import create_app
from api.lib.db import standalone_sessions
from api.lib.settings import Settings
from api.oauth.scopes import DEFAULT_APP_SCOPES

ADMIN_EMAIL = "admin@shikshasetu.local"
DEMO_CALLBACK = "https://chatgpt.com/aip/g-demo/oauth/callback"


async def first_run(settings: Settings) -> str | None:
    """Create the first admin and a demo app when there are no users; returns the text to show once."""
    async with standalone_sessions(settings) as sessions, sessions() as session, session.begin():
        if await session.scalar(select(func.count()).select_from(User)):
            return None
        _, password = await create_user(
            session, Passwords(password_hasher(settings)), email=ADMIN_EMAIL, role="admin"
        )
        app, secret = await create_app(
            session,
            settings,
            AppCreate(
                name="Demo GPT",
                redirect_uris=[DEMO_CALLBACK],
                scopes=list(DEFAULT_APP_SCOPES),
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
            ),
        )
    return (
        "First start: created these credentials. They are shown only now; secrets are stored hashed.\n"
        f"  admin sign-in   {ADMIN_EMAIL} / {password}\n"
        f"  demo GPT app    client_id {app.client_id}\n"
        f"                  client_secret {secret}\n"
        f"  Set your GPT's callback URL with: setu apps update {app.client_id} --redirect-uri <callback>\n"
        "  (docs/gpt-setup.md walks through the GPT editor's OAuth form)"
    )
