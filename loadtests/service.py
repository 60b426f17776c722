"""The service under test, reached over HTTP only (nothing here imports `api`): OAuth tokens, admin API.

An admin credential is either the client id and secret of an app allowed the `admin` scope and the
client-credentials grant, or an administrator's e-mail and password, signed in through the built-in public
client `setu-admin-tools` (PKCE, loopback callback, scope `admin` only), as a person would sign in.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

ADMIN_TOOLS_CLIENT_ID = "setu-admin-tools"
ADMIN_TOOLS_CALLBACK = "http://127.0.0.1/setu-admin-tools/callback"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


class ServiceError(RuntimeError):
    """A call to the service did not answer as expected; the message names the step and the answer."""


@dataclass(frozen=True)
class AdminCredential:
    """An app with the `admin` scope (`client_id` + `client_secret`), or an admin's `email` + `password`."""

    client_id: str | None = None
    client_secret: str | None = None
    email: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        app = bool(self.client_id and self.client_secret)
        person = bool(self.email and self.password)
        if app == person:
            raise ValueError("give an admin app's client id and secret, or an admin's e-mail and password")


def _expect(response: httpx.Response, status: int, step: str) -> httpx.Response:
    if response.status_code != status:
        raise ServiceError(f"{step}: expected {status}, got {response.status_code}: {response.text[:300]}")
    return response


def _hidden(html: str) -> dict[str, str]:
    return {name: unescape(value) for name, value in _HIDDEN.findall(html)}


def client_credentials_token(http: httpx.Client, client_id: str, client_secret: str, scope: str) -> str:
    response = http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client_id, client_secret),
    )
    return str(_expect(response, 200, "client-credentials token").json()["access_token"])


def sign_in(
    http: httpx.Client,
    *,
    client_id: str,
    redirect_uri: str,
    email: str,
    password: str,
    scope: str,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """The authorization-code flow through the sign-in and consent pages (PKCE S256), then the code
    exchange; returns the token response. A fresh cookie jar per sign-in, as a new browser has."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    http.cookies.clear()
    page = _expect(http.get(f"/oauth/authorize?{urlencode(query)}"), 200, "sign-in page")
    consent = http.post("/oauth/authorize", data={**_hidden(page.text), "email": email, "password": password})
    _expect(consent, 200, f"sign-in of {email}")
    if "decision" not in consent.text:
        raise ServiceError(f"sign-in of {email} was refused (wrong e-mail or password?)")
    redirect = http.post("/oauth/authorize", data={**_hidden(consent.text), "decision": "approve"})
    _expect(redirect, 303, "consent")
    params = dict(parse_qsl(urlsplit(redirect.headers.get("location", "")).query))
    if "code" not in params:
        raise ServiceError(f"consent: no code in the redirect ({params.get('error_description', params)})")
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    if client_secret is not None:
        form["client_secret"] = client_secret
    return dict(_expect(http.post("/oauth/token", data=form), 200, "code exchange").json())


def admin_token(http: httpx.Client, credential: AdminCredential) -> str:
    """An access token with the `admin` scope."""
    if credential.client_id and credential.client_secret:
        return client_credentials_token(http, credential.client_id, credential.client_secret, "admin")
    assert credential.email and credential.password
    issued = sign_in(
        http,
        client_id=ADMIN_TOOLS_CLIENT_ID,
        redirect_uri=ADMIN_TOOLS_CALLBACK,
        email=credential.email,
        password=credential.password,
        scope="admin",
    )
    return str(issued["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
