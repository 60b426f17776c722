"""The sign-in and consent pages in headless Chromium (Debian's `chromium`), against real uvicorn."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from tests.oauth.conftest import LiveServer
from tests.utils.oauth import CALLBACK, TEST_PASSWORD, create_test_user, register_test_app

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (`make chromium` installs it)"),
]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        await browser.close()


async def _page(browser: Browser) -> Page:
    page = await browser.new_page()

    async def callback(route: Route) -> None:  # stands in for ChatGPT's callback endpoint
        await route.fulfill(status=200, content_type="text/plain", body="callback reached")

    await page.route(f"{CALLBACK}**", callback)
    return page


async def _authorize_url(live_server: LiveServer, client_id: str, state: str) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "curriculum:read memories:write",
        "state": state,
    }
    return f"{live_server.base_url}/oauth/authorize?{urlencode(query)}"


async def test_sign_in_and_consent_in_chromium_redirect_with_a_working_code_and_the_state(
    live_server: LiveServer, browser: Browser
) -> None:
    app, secret = await register_test_app(live_server.settings)
    _, email = await create_test_user(live_server.settings, role="student")
    state = secrets.token_urlsafe(16)
    page = await _page(browser)
    await page.goto(await _authorize_url(live_server, app.client_id, state))
    assert app.name in await page.inner_text("h1")
    await page.fill("#email", email)
    await page.fill("#password", TEST_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#approve")
    consent = await page.inner_text("main")
    assert email in consent and "memories:write" in consent and "admin" not in consent
    await page.click("#approve")
    await page.wait_for_url(f"{CALLBACK}**")
    returned = dict(parse_qsl(urlsplit(page.url).query))
    assert returned["state"] == state
    assert returned["iss"] == live_server.base_url
    assert returned["code"].startswith("setu_ac_")
    async with httpx.AsyncClient() as http:
        token = await http.post(
            f"{live_server.base_url}/oauth/token",
            data={"grant_type": "authorization_code", "code": returned["code"], "redirect_uri": CALLBACK},
            auth=(app.client_id, secret or ""),
        )
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "curriculum:read memories:write"


async def test_wrong_password_keeps_the_person_on_the_sign_in_page_with_an_error(
    live_server: LiveServer, browser: Browser
) -> None:
    app, _ = await register_test_app(live_server.settings)
    _, email = await create_test_user(live_server.settings)
    page = await _page(browser)
    await page.goto(await _authorize_url(live_server, app.client_id, "s1"))
    await page.fill("#email", email)
    await page.fill("#password", "not the password")
    await page.click("button[type=submit]")
    assert "Wrong e-mail or password" in await page.inner_text("#error")
    assert await page.input_value("#email") == email
    assert urlsplit(page.url).netloc == urlsplit(live_server.base_url).netloc


async def test_denying_consent_in_chromium_redirects_with_access_denied(
    live_server: LiveServer, browser: Browser
) -> None:
    app, _ = await register_test_app(live_server.settings)
    _, email = await create_test_user(live_server.settings)
    page = await _page(browser)
    await page.goto(await _authorize_url(live_server, app.client_id, "s2"))
    await page.fill("#email", email)
    await page.fill("#password", TEST_PASSWORD)
    await page.click("button[type=submit]")
    await page.click("#deny")
    await page.wait_for_url(f"{CALLBACK}**")
    returned = dict(parse_qsl(urlsplit(page.url).query))
    assert returned["error"] == "access_denied"
    assert returned["state"] == "s2"
    assert "code" not in returned


async def test_unregistered_redirect_uri_is_explained_on_our_page_in_chromium(
    live_server: LiveServer, browser: Browser
) -> None:
    app, _ = await register_test_app(live_server.settings)
    page = await _page(browser)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": "https://evil.example/callback",
            "state": "x",
        }
    )
    response = await page.goto(f"{live_server.base_url}/oauth/authorize?{query}")
    assert response is not None and response.status == 400
    assert urlsplit(page.url).netloc == urlsplit(live_server.base_url).netloc
    assert "not a registered callback" in await page.inner_text("#error")
