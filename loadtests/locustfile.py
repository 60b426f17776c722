"""The load-test users: a Custom GPT, an OAuth client, and a caller of the ML tier's embeddings.

Request names are the API's operation ids (what the SLO file in `loadtests/slo.toml` refers to). Each locust
user sends at most `SETU_LOADTEST_<CLASS>_RATE` task iterations per second (0: no pause, as fast as
answers come). Test data comes from `SETU_LOADTEST_DATA` (written by `python -m loadtests.setup`); the
embeddings user targets `SETU_LOADTEST_SERVING_URL`. Tasks that need the ML tier are tagged `ml`
(`--exclude-tags ml` runs without it). `make loadtest` sets all of these; see docs/load-testing.md.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import random
import re
import time
from collections import deque
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from locust import FastHttpUser, constant, constant_throughput, tag, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

QUERIES = [
    "photosynthesis in green plants",
    "adding fractions with unlike denominators",
    "states of matter solid liquid gas",
    "the water cycle and rain",
    "multiplication tables for young children",
    "democracy and elections in India",
    "force and pressure",
    "reading comprehension of a short story",
    "area and perimeter of rectangles",
    "human digestive system",
    "light reflection mirrors",
    "our environment and pollution",
    "place value of numbers",
    "Mughal empire history",
    "electric circuits and current",
    "nutrition in animals",
    "writing a formal letter",
    "map reading and directions",
    "acids bases and salts",
    "probability with coins and dice",
    "linear equations in one variable",
    "soil erosion and conservation",
    "the French revolution",
    "sound vibrations and pitch",
]
MEMORIES = [
    "Prefers examples from cricket when learning statistics.",
    "Teaches class {n} science in a government school in Pune.",
    "Struggled with fractions last week; revise equivalent fractions first.",
    "Wants worksheets in Hindi and English side by side.",
    "Finished the chapter on the water cycle; next is weather.",
    "Learns best with short quizzes of five questions.",
    "Exam on light and reflection in {n} days.",
    "Likes stories about Indian scientists such as C. V. Raman.",
]
RECALLS = [
    "what does the student prefer",
    "which chapter comes next",
    "upcoming exam",
    "language of worksheets",
    "topics the student struggled with",
]
PASSAGES = [
    "Plants make their food using sunlight, water and carbon dioxide. This process is called photosynthesis.",
    "When we add two fractions with different denominators, we first find a common denominator.",
    "Water evaporates from rivers and seas, forms clouds, and falls again as rain.",
    "A mirror reflects light; the angle of incidence equals the angle of reflection.",
]
MEMORIES_KEPT = 20
"""A GPT user forgets its oldest memory past this many, so long runs stay under the per-user limit."""
TOKEN_REFRESH_MARGIN_S = 60.0
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@functools.cache
def test_data() -> dict[str, Any]:
    """The data file made by `loadtests.setup` (read once per process)."""
    path = os.environ.get("SETU_LOADTEST_DATA")
    if not path:
        raise RuntimeError("SETU_LOADTEST_DATA is not set: run `python -m loadtests.setup` first")
    with open(path) as file:
        data: dict[str, Any] = json.load(file)
    return data


def pace(name: str, default: float) -> Any:
    """Locust `wait_time`: at most `SETU_LOADTEST_<NAME>_RATE` task iterations per second (0: no pause)."""
    rate = float(os.environ.get(f"SETU_LOADTEST_{name}_RATE", default))
    return constant(0) if rate <= 0 else constant_throughput(rate)


_slots = itertools.count()


def claim_slot(user: FastHttpUser) -> int:
    """A slot number unique across this run's locust processes: process `worker_index` of
    `SETU_LOADTEST_PROCESSES` takes slots index, index + processes, ..."""
    processes = int(os.environ.get("SETU_LOADTEST_PROCESSES", "1"))
    runner = user.environment.runner
    index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    return index + next(_slots) * processes


class OAuthFailed(Exception):
    """A step of getting a token failed; the request itself was already recorded as a failure."""


class Grant:
    """One end user's tokens at our authorization server, as ChatGPT holds them."""

    def __init__(self, user: FastHttpUser) -> None:
        self.user = user
        self.access_token = ""
        self.refresh_token: str | None = None
        self.expires_at = 0.0

    @property
    def headers(self) -> dict[str, str]:
        if time.monotonic() > self.expires_at - TOKEN_REFRESH_MARGIN_S:
            self.refresh()
        return {"Authorization": f"Bearer {self.access_token}"}

    def start(self) -> None:
        """Take a fresh refresh-token slot, or, when all are taken, sign in like a new ChatGPT user."""
        data = test_data()
        slot = claim_slot(self.user)
        if slot < len(data["refresh_tokens"]):
            self.refresh_token = data["refresh_tokens"][slot]
            self.refresh()
        else:
            self.sign_in(data["users"][slot % len(data["users"])])

    def _token(self, name: str, form: dict[str, str]) -> None:
        data = test_data()
        body = urlencode({**form, "client_id": data["client_id"], "client_secret": data["client_secret"]})
        with self.user.client.post(
            "/oauth/token", data=body, headers=_FORM, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                raise OAuthFailed(name)
            issued = response.json()
            if form["grant_type"] == "refresh_token" and issued.get("refresh_token") in (
                None,
                form["refresh_token"],
            ):
                response.failure("refresh token was not rotated")
                raise OAuthFailed(name)
        self.access_token = issued["access_token"]
        self.refresh_token = issued.get("refresh_token", self.refresh_token)
        self.expires_at = time.monotonic() + float(issued["expires_in"])

    def refresh(self) -> None:
        assert self.refresh_token is not None
        self._token(
            "issueToken:refresh_token", {"grant_type": "refresh_token", "refresh_token": self.refresh_token}
        )

    def client_credentials(self) -> None:
        self._token("issueToken:client_credentials", {"grant_type": "client_credentials"})

    def sign_in(self, email: str) -> None:
        """The authorization-code flow through our sign-in and consent pages, then the code exchange."""
        data = test_data()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": data["client_id"],
                "redirect_uri": data["redirect_uri"],
                "scope": data["scope"],
                "state": f"lt{random.randrange(10**9)}",
            }
        )
        client = self.user.client  # its cookie jar carries the CSRF cookie between the three steps
        with client.get(f"/oauth/authorize?{query}", name="authorize:page", catch_response=True) as page:
            if page.status_code != 200 or "csrf_token" not in (page.text or ""):
                page.failure(f"{page.status_code}: no sign-in form")
                raise OAuthFailed("authorize:page")
        fields = dict(_HIDDEN.findall(page.text or ""))
        login = urlencode({**_unescaped(fields), "email": email, "password": data["password"]})
        with client.post(
            "/oauth/authorize", data=login, headers=_FORM, name="authorize:signIn", catch_response=True
        ) as consent_page:
            if consent_page.status_code != 200 or "decision" not in (consent_page.text or ""):
                consent_page.failure(f"{consent_page.status_code}: sign-in refused")
                raise OAuthFailed("authorize:signIn")
        consent = urlencode(
            {**_unescaped(dict(_HIDDEN.findall(consent_page.text or ""))), "decision": "approve"}
        )
        with client.post(
            "/oauth/authorize",
            data=consent,
            headers=_FORM,
            name="authorize:consent",
            allow_redirects=False,
            catch_response=True,
        ) as redirect:
            params = dict(parse_qsl(urlsplit(redirect.headers.get("location", "")).query))
            if redirect.status_code != 303 or "code" not in params:
                redirect.failure(f"{redirect.status_code}: no code in the redirect")
                raise OAuthFailed("authorize:consent")
            redirect.success()
        self._token(
            "issueToken:authorization_code",
            {
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": data["redirect_uri"],
            },
        )


def _unescaped(fields: dict[str, str]) -> dict[str, str]:
    return {name: unescape(value) for name, value in fields.items()}


def _expect(response: Any, status: int, key: str | None = None) -> dict[str, Any] | None:
    """Mark the response failed unless it has `status` (and a JSON body with `key`); return the body."""
    if response.status_code != status:
        response.failure(f"expected {status}, got {response.status_code}: {(response.text or '')[:200]}")
        return None
    if key is None:
        return None
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        response.failure("response is not JSON")
        return None
    if key not in body:
        response.failure(f"response has no {key!r}")
        return None
    return body


class GptUser(FastHttpUser):
    """A Custom GPT acting for one signed-in teacher or student: curriculum look-ups and a memory bank."""

    weight = 8
    wait_time = pace("GPT", 5)

    def on_start(self) -> None:
        self.grant = Grant(self)
        self.memories: deque[str] = deque()
        try:
            self.grant.start()
        except OAuthFailed:
            raise StopUser() from None

    @task(30)
    def search_standards(self) -> None:
        query = urlencode({"q": random.choice(QUERIES), "limit": 10})
        with self.client.get(
            f"/api/v1/curriculum/standards?{query}",
            headers=self.grant.headers,
            name="searchStandards",
            catch_response=True,
        ) as response:
            _expect(response, 200, "items")

    @task(30)
    def get_standard(self) -> None:
        code = random.choice(test_data()["standard_codes"])
        with self.client.get(
            f"/api/v1/curriculum/standards/{code}",
            headers=self.grant.headers,
            name="getStandard",
            catch_response=True,
        ) as response:
            _expect(response, 200, "code")

    @task(10)
    def create_memory(self) -> None:
        content = random.choice(MEMORIES).format(n=random.randint(3, 10))
        body = {"content": content, "tags": [random.choice(["preference", "progress", "goal"])]}
        with self.client.post(
            "/api/v1/memories",
            json=body,
            headers=self.grant.headers,
            name="createMemory",
            catch_response=True,
        ) as response:
            accepted = _expect(response, 202, "id")
        if accepted is not None:
            self.memories.append(accepted["id"])
        if len(self.memories) > MEMORIES_KEPT:
            self.forget_memory(self.memories.popleft())

    def forget_memory(self, memory_id: str) -> None:
        with self.client.delete(
            f"/api/v1/memories/{memory_id}",
            headers=self.grant.headers,
            name="deleteMemory",
            catch_response=True,
        ) as response:
            _expect(response, 204)

    @tag("ml")  # needs the ML tier: the query is embedded (then cached) through serving
    @task(12)
    def search_memories(self) -> None:
        body = {"query": random.choice(RECALLS), "limit": 5}
        with self.client.post(
            "/api/v1/memories/search",
            json=body,
            headers=self.grant.headers,
            name="searchMemories",
            catch_response=True,
        ) as response:
            _expect(response, 200, "items")

    @task(6)
    def list_memories(self) -> None:
        with self.client.get(
            "/api/v1/memories?limit=10", headers=self.grant.headers, name="listMemories", catch_response=True
        ) as response:
            _expect(response, 200, "items")

    @tag("ml")
    @task(2)
    def align(self) -> None:
        body = {"text": random.choice(PASSAGES), "limit": 3}
        with self.client.post(
            "/api/v1/content/align",
            json=body,
            headers=self.grant.headers,
            name="alignToCurriculum",
            catch_response=True,
        ) as response:
            _expect(response, 200, "items")


class OAuthUser(FastHttpUser):
    """An OAuth client at the token endpoint: refresh-token rotation, app tokens, now and then a sign-in."""

    weight = 1
    wait_time = pace("OAUTH", 5)

    def on_start(self) -> None:
        self.grant = Grant(self)
        try:
            self.grant.start()
        except OAuthFailed:
            raise StopUser() from None

    @task(12)
    def rotate_refresh_token(self) -> None:
        try:
            self.grant.refresh()
        except OAuthFailed:
            raise StopUser() from None  # the chain is broken; a real client would sign in again

    @task(4)
    def client_credentials(self) -> None:
        with contextlib.suppress(OAuthFailed):  # recorded as a failure; the next iteration tries again
            self.grant.client_credentials()

    @task(1)
    def sign_in(self) -> None:
        users = test_data()["users"]
        with contextlib.suppress(OAuthFailed):
            self.grant.sign_in(random.choice(users))


class ServingUser(FastHttpUser):
    """A client of the ML tier's OpenAI-style embeddings endpoint (straight to Ray Serve, not via the API)."""

    weight = 1
    wait_time = pace("SERVING", 10)

    def __init__(self, environment: Any) -> None:
        # Set per instance: locust gives every user class the `--host` (the API's address).
        serving_url = os.environ.get("SETU_LOADTEST_SERVING_URL")
        if not serving_url:
            raise RuntimeError("ServingUser needs SETU_LOADTEST_SERVING_URL (the Serve HTTP address)")
        self.host = serving_url
        super().__init__(environment)

    def _embed(self, texts: list[str], name: str) -> None:
        body = {"model": "all-MiniLM-L6-v2", "input": texts}
        with self.client.post("/v1/embeddings", json=body, name=name, catch_response=True) as response:
            result = _expect(response, 200, "data")
            if result is not None and len(result["data"]) != len(texts):
                response.failure(f"{len(texts)} inputs, {len(result['data'])} embeddings")

    @task(8)
    def embed_one(self) -> None:
        self._embed([f"{random.choice(QUERIES)} ({random.randrange(10**6)})"], "createEmbeddings:1")

    @task(1)
    def embed_batch(self) -> None:
        self._embed([f"{text} ({random.randrange(10**6)})" for text in PASSAGES * 2], "createEmbeddings:8")
