"""`setu up` on a machine that has never run us, Ray included: what `make run` does on a fresh clone.

How it isolates itself, so that nothing else on the machine (or in this test session) can prepare it:
- `setu up` runs as its own process, with `HOME` an empty temporary directory: no `~/.ray/auth_token` (which
  an earlier local `ray.init()` anywhere on the machine would have left), no `~/.cache`, no
  `~/.local/share/shikshasetu`. The environment drops `DATABASE_URL`, `REDIS_URL`, `SERVING_URL` and every
  `RAY_*` setting this session may carry (the session has a Ray token of its own).
- A fresh `SETU_DATA_DIR` (embedded PostgreSQL and Valkey, the Ray token, Ray's state) and its own free
  ports (`SETU_PORT`, `SETU_SERVING_PORT`, `SETU_SERVING_METRICS_PORT`), so it meets no other stack.
- Every process it started is recorded by PID (the process tree of `setu up`, plus the embedded
  postmaster, which detaches) and, after SIGINT, each must be gone: nothing is matched by name.
- Afterwards `HOME` must still be empty: nothing was read from or written to `~/.ray`.

Deadlines are generous for a loaded 2-core machine (measured on an idle one: serving ok ~23 s after start,
all standards embedded ~35 s): serving ok within `SERVING_DEADLINE_S`, every standard and topic embedded
within `EMBEDDED_DEADLINE_S` of the start, a memory `ready` within `MEMORY_DEADLINE_S` of its creation.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from loadtests.service import bearer, sign_in
from tests.system.test_setu_up import running_service, service_log
from tests.utils.servers import free_port

pytestmark = pytest.mark.ray

SERVING_DEADLINE_S = 300.0
EMBEDDED_DEADLINE_S = 420.0
MEMORY_DEADLINE_S = 120.0
STOP_DEADLINE_S = 60.0
DEMO_CALLBACK = "https://chatgpt.com/aip/g-demo/oauth/callback"


def _fresh_environment(home: Path) -> dict[str, str]:
    """What a new user's shell would have: our variables only, a HOME that holds nothing."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "SETU_", "XDG_"))
        and k not in {"DATABASE_URL", "REDIS_URL", "SERVING_URL"}
    }
    env.update(
        {
            "HOME": str(home),
            "SETU_SERVING_PORT": str(free_port()),
            "SETU_SERVING_METRICS_PORT": str(free_port()),
            "SETU_LOG_JSON": "true",
        }
    )
    return env


async def _embedding_counts(data_dir: Path) -> tuple[int, int]:
    """(rows, rows without an embedding) over standards and topics, read from the embedded PostgreSQL."""
    socket_dir = data_dir / "postgres"
    port = int((socket_dir / "postmaster.pid").read_text().splitlines()[3])
    connection = await asyncpg.connect(
        host=str(socket_dir), port=port, user="postgres", database="shikshasetu"
    )
    try:
        row = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM curriculum_standards) + (SELECT count(*) FROM curriculum_topics),"
            " (SELECT count(*) FROM curriculum_standards WHERE embedding IS NULL)"
            " + (SELECT count(*) FROM curriculum_topics WHERE embedding IS NULL)"
        )
    finally:
        await connection.close()
    assert row is not None
    return int(row[0]), int(row[1])


def _started(process_id: int, data_dir: Path) -> dict[int, float]:
    """PID -> create time of everything `setu up` started: its process tree and the embedded postmaster."""
    root = psutil.Process(process_id)
    found = {child.pid: child.create_time() for child in root.children(recursive=True)}
    postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    found[postmaster] = psutil.Process(postmaster).create_time()
    return found


def _still_running(started: dict[int, float]) -> list[str]:
    alive = []
    for pid, created in started.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return alive


def _wait_for(what: str, deadline_s: float, probe: object, log: Path) -> float:
    """Poll `probe()` until truthy; returns the seconds it took, fails naming `what` and the log tail."""
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < deadline_s:
        try:
            last = probe()  # type: ignore[operator]
        except (httpx.HTTPError, OSError, asyncpg.PostgresError) as error:
            last = error
        if last is True:
            return time.monotonic() - started
        time.sleep(1)
    pytest.fail(f"{what} not within {deadline_s:g} s (last: {last!r}); log tail:\n{log.read_text()[-4000:]}")


def test_setu_up_on_a_fresh_machine(tmp_path: Path) -> None:
    home, data_dir = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    log = service_log(data_dir)
    started_at = time.monotonic()
    with running_service(data_dir, env=_fresh_environment(home), ready_within=SERVING_DEADLINE_S) as (
        process,
        base,
    ):
        # 1. /ready says serving ok (the local Ray started with our own token, on an empty HOME).
        def serving_ok() -> object:
            components = httpx.get(f"{base}/ready", timeout=10).json()["components"]
            return components["serving"]["status"] == "ok" or components["serving"]

        _wait_for(
            "/ready with serving ok", SERVING_DEADLINE_S - (time.monotonic() - started_at), serving_ok, log
        )
        serving_s = time.monotonic() - started_at

        # 2. The JWKS lists the signing key before any token was issued.
        keys = httpx.get(f"{base}/.well-known/jwks.json", timeout=10).json()["keys"]
        assert keys and all(key["alg"] == "ES256" and "d" not in key for key in keys)

        # 3. Every curriculum standard (and topic) gets its embedding.
        def all_embedded() -> object:
            total, missing = asyncio.run(_embedding_counts(data_dir))
            return (total >= 478 and missing == 0) or f"{missing} of {total} without an embedding"

        _wait_for(
            "every standard embedded",
            EMBEDDED_DEADLINE_S - (time.monotonic() - started_at),
            all_embedded,
            log,
        )
        embedded_s = time.monotonic() - started_at

        # 4. A memory created through the API (first-run credentials, sign-in like ChatGPT) becomes ready.
        output = log.read_text()
        email, password = re.search(r"admin sign-in\s+(\S+) / (\S+)", output).groups()  # type: ignore[union-attr]
        client_id = re.search(r"client_id (\S+)", output).group(1)  # type: ignore[union-attr]
        client_secret = re.search(r"client_secret (\S+)", output).group(1)  # type: ignore[union-attr]
        with httpx.Client(base_url=base, timeout=60) as http:
            tokens = sign_in(
                http,
                client_id=client_id,
                redirect_uri=DEMO_CALLBACK,
                email=email,
                password=password,
                scope="memories:read memories:write",
                client_secret=client_secret,
            )
            headers = bearer(tokens["access_token"])
            created = http.post(
                "/api/v1/memories", json={"content": "Class 7 found fractions hard"}, headers=headers
            )
            assert created.status_code == 202, created.text
            memory = f"/api/v1/memories/{created.json()['id']}"
            _wait_for(
                "the memory ready",
                MEMORY_DEADLINE_S,
                lambda: http.get(memory, headers=headers).json()["status"] == "ready" or "pending",
                log,
            )

        # 5. SIGINT stops everything it started.
        started = _started(process.pid, data_dir)
        assert len(started) >= 5, started  # valkey, postgres, ray start, raylet, replicas...
        process.send_signal(signal.SIGINT)
        process.wait(timeout=STOP_DEADLINE_S)
        deadline = time.monotonic() + STOP_DEADLINE_S
        while _still_running(started) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _still_running(started) == [], "left behind after SIGINT"
    assert sorted(str(path.relative_to(home)) for path in home.rglob("*")) == [], "HOME was written"
    token = data_dir / "serving" / "ray-auth-token"
    assert re.fullmatch(r"[0-9a-f]{64}", token.read_text()) and token.stat().st_mode & 0o077 == 0
    print(f"fresh machine: serving ok after {serving_s:.1f} s, all embedded after {embedded_s:.1f} s")
