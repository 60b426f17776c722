"""Test data for a load test, made by the app's own services: a GPT app, end users, refresh tokens, codes.

`python -m loadtests.setup --users 40 --out reports/loadtest/data.json` with `DATABASE_URL`/`REDIS_URL` (and
`SETU_PUBLIC_URL` or `SETU_HOST`/`SETU_PORT`, which set the token issuer) pointing at the stack under test.

Every run makes a new app and new accounts, so runs never share refresh-token chains. Each account gets one
refresh token (a "slot"): a locust user claims one slot and keeps rotating its chain. All accounts share one
password (hashed once), so users beyond the slots sign in through `/oauth/authorize` like ChatGPT does.
The data file holds credentials: it is written owner-only, under the ignored `reports/` folder.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import secrets
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import select

from api.accounts.models import User
from api.accounts.services import password_hasher
from api.apps.schemas import AppCreate
from api.apps.services import create_app
from api.curriculum.models import Standard
from api.lib.settings import Settings, get_settings
from api.oauth.runtime import standalone_runtime
from api.oauth.scopes import DEFAULT_APP_SCOPES

CALLBACK = "https://chatgpt.com/aip/g-loadtest/oauth/callback"
MAX_PER_MINUTE = 1_000_000
"""The app's and each user's rate limit: high, so the test measures capacity (the limiter still runs)."""
STANDARD_CODES = 400


@dataclass(frozen=True)
class LoadTestData:
    """What the locust users read (`SETU_LOADTEST_DATA`): see the module docstring."""

    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str
    password: str
    users: list[str]
    """E-mail addresses; all share `password`."""
    refresh_tokens: list[str]
    """One per user (same order): the slot a locust user claims."""
    standard_codes: list[str]
    """Codes that exist, for `getStandard`."""
    created_at: str

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(asdict(self), file, indent=1)


async def prepare(settings: Settings, users: int) -> LoadTestData:
    """Create the app, `users` accounts with one refresh token each, and pick standard codes to read."""
    if users < 1:
        raise ValueError("users must be at least 1")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    password = secrets.token_urlsafe(18)
    password_hash = password_hasher(settings).hash(password)  # once: argon2 costs ~0.1-0.5 s
    scopes = list(DEFAULT_APP_SCOPES)
    async with standalone_runtime(settings) as runtime, runtime.sessions() as session:
        app, secret = await create_app(
            session,
            settings,
            AppCreate(
                name=f"Load test {stamp}",
                redirect_uris=[CALLBACK],
                scopes=scopes,
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
                rate_limit_per_minute=MAX_PER_MINUTE,
                user_rate_limit_per_minute=MAX_PER_MINUTE,
            ),
        )
        run_id = uuid.uuid4().hex[:8]
        accounts = [
            User(
                email=f"loadtest-{run_id}-{index:05d}@example.test",
                name=f"Load test user {index}",
                role="teacher" if index % 2 else "student",
                password_hash=password_hash,
                is_active=True,
            )
            for index in range(users)
        ]
        session.add_all(accounts)
        await session.commit()
        refresh_tokens = []
        for account in accounts:
            # issue_tokens commits: the same path the token endpoint takes after a consent.
            issued = await runtime.server.issue_tokens(
                session, app, account.id, [*scopes], uuid.uuid4(), refresh=True
            )
            assert issued.refresh_token is not None
            refresh_tokens.append(issued.refresh_token)
        codes = list(
            (
                await session.scalars(
                    select(Standard.code).order_by(Standard.code).limit(STANDARD_CODES)  # deterministic
                )
            ).all()
        )
    if not codes:
        raise RuntimeError(
            "no curriculum standards in the database: load the seed first (setu curriculum load)"
        )
    assert secret is not None
    return LoadTestData(
        client_id=app.client_id,
        client_secret=secret,
        redirect_uri=CALLBACK,
        scope=" ".join(scopes),
        password=password,
        users=[account.email for account in accounts],
        refresh_tokens=refresh_tokens,
        standard_codes=codes,
        created_at=stamp,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.setup", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=40, help="accounts (and refresh-token slots) to create")
    parser.add_argument("--out", type=Path, default=Path("reports/loadtest/data.json"))
    args = parser.parse_args(argv)
    data = asyncio.run(prepare(get_settings(), args.users))
    data.write(args.out)
    sys.stdout.write(f"wrote {args.out}: app {data.client_id}, {len(data.users)} users\n")


if __name__ == "__main__":
    main()
