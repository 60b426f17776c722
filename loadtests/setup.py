"""Test data for a load test, made through the service's HTTP API only: a GPT app, end users, refresh tokens.

    python -m loadtests.setup --host https://api.example.org --admin-email E --admin-password P --users 40
    python -m loadtests.setup --host ... --admin-client-id ID --admin-client-secret S --out data.json

An admin credential is the client id and secret of an app with the `admin` scope (and the
client-credentials grant), or an administrator's e-mail and password (signed in through the built-in
`setu-admin-tools` client); the variables `SETU_LOADTEST_ADMIN_CLIENT_ID`/`_SECRET` or
`SETU_LOADTEST_ADMIN_EMAIL`/`_PASSWORD` work too. Nothing here imports `api`, and nothing touches the
database: the service may run anywhere.

Every run makes a new app (`createApp`) and new accounts (`createUser`, all with one random password), so runs
never share refresh-token chains. Each account signs in once through `/oauth/authorize` (sign-in, consent,
code exchange) for its refresh token (a "slot"): a locust user claims one slot and keeps rotating its chain;
users beyond the slots sign in with the shared password, as a new ChatGPT user does. Standard codes come
from `searchStandards` (browsing, no query). The data file holds credentials: it is written owner-only,
under the ignored `reports/` folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from loadtests.service import (
    AdminCredential,
    ServiceError,
    admin_token,
    bearer,
    client_credentials_token,
    sign_in,
)

CALLBACK = "https://chatgpt.com/aip/g-loadtest/oauth/callback"
MAX_PER_MINUTE = 1_000_000
"""The app's and each user's rate limit: high, so the test measures capacity (the limiter still runs)."""
STANDARD_CODES = 400
SCOPES = ["curriculum:read", "memories:read", "memories:write", "content:generate"]
SIGN_IN_THREADS = 4
"""Sign-ins at once: each costs the server an argon2id verification (~0.1-0.5 s of one core)."""


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


def _json(response: httpx.Response, status: int, step: str) -> Any:
    if response.status_code != status:
        raise ServiceError(f"{step}: expected {status}, got {response.status_code}: {response.text[:300]}")
    return response.json()


def _standard_codes(http: httpx.Client, token: str) -> list[str]:
    codes: list[str] = []
    cursor: str | None = None
    while len(codes) < STANDARD_CODES:
        params: dict[str, str | int] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        page = _json(
            http.get("/api/v1/curriculum/standards", params=params, headers=bearer(token)),
            200,
            "searchStandards",
        )
        codes += [item["code"] for item in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return codes[:STANDARD_CODES]


def prepare(host: str, credential: AdminCredential, users: int) -> LoadTestData:
    """Create the app and `users` accounts with one refresh token each, and pick standard codes to read."""
    if users < 1:
        raise ValueError("users must be at least 1")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    password = secrets.token_urlsafe(18)
    run_id = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=host, timeout=60) as http:
        admin = bearer(admin_token(http, credential))
        created = _json(
            http.post(
                "/api/v1/admin/apps",
                json={
                    "name": f"Load test {stamp}",
                    "redirect_uris": [CALLBACK],
                    "scopes": SCOPES,
                    "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
                    "rate_limit_per_minute": MAX_PER_MINUTE,
                    "user_rate_limit_per_minute": MAX_PER_MINUTE,
                },
                headers=admin,
            ),
            201,
            "createApp",
        )
        client_id, client_secret = created["app"]["client_id"], created["client_secret"]
        emails = [f"loadtest-{run_id}-{index:05d}@example.test" for index in range(users)]

        def account(index: int) -> str:
            with httpx.Client(base_url=host, timeout=60) as own:
                body = {
                    "email": emails[index],
                    "name": f"Load test user {index}",
                    "role": "teacher" if index % 2 else "student",
                    "password": password,
                }
                _json(own.post("/api/v1/admin/users", json=body, headers=admin), 201, "createUser")
                issued = sign_in(  # its own cookie jar: a browser of its own
                    own,
                    client_id=client_id,
                    redirect_uri=CALLBACK,
                    email=emails[index],
                    password=password,
                    scope=" ".join(SCOPES),
                    client_secret=client_secret,
                )
                return str(issued["refresh_token"])

        with ThreadPoolExecutor(SIGN_IN_THREADS) as pool:
            refresh_tokens = list(pool.map(account, range(users)))
        reader = client_credentials_token(http, client_id, client_secret, "curriculum:read")
        codes = _standard_codes(http, reader)
    if not codes:
        raise ServiceError("no curriculum standards on the service: load the seed (setu curriculum load)")
    return LoadTestData(
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=CALLBACK,
        scope=" ".join(SCOPES),
        password=password,
        users=emails,
        refresh_tokens=refresh_tokens,
        standard_codes=codes,
        created_at=stamp,
    )


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("admin credential (an admin app, or an admin's sign-in)")
    env = os.environ.get
    group.add_argument("--admin-client-id", default=env("SETU_LOADTEST_ADMIN_CLIENT_ID"))
    group.add_argument("--admin-client-secret", default=env("SETU_LOADTEST_ADMIN_CLIENT_SECRET"))
    group.add_argument("--admin-email", default=env("SETU_LOADTEST_ADMIN_EMAIL"))
    group.add_argument("--admin-password", default=env("SETU_LOADTEST_ADMIN_PASSWORD"))


def credential_from(args: argparse.Namespace) -> AdminCredential:
    if args.admin_client_id or args.admin_client_secret:
        return AdminCredential(client_id=args.admin_client_id, client_secret=args.admin_client_secret)
    return AdminCredential(email=args.admin_email, password=args.admin_password)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.setup", description=__doc__.split("\n")[0])
    parser.add_argument("--host", required=True, help="the API's base URL, e.g. http://127.0.0.1:8000")
    add_credential_arguments(parser)
    parser.add_argument("--users", type=int, default=40, help="accounts (and refresh-token slots) to create")
    parser.add_argument("--out", type=Path, default=Path("reports/loadtest/data.json"))
    args = parser.parse_args(argv)
    try:
        data = prepare(args.host.rstrip("/"), credential_from(args), args.users)
    except (ValueError, ServiceError, httpx.HTTPError) as error:
        parser.exit(2, f"loadtests.setup: {error}\n")
    data.write(args.out)
    sys.stdout.write(f"wrote {args.out}: app {data.client_id}, {len(data.users)} users\n")


if __name__ == "__main__":
    main()
