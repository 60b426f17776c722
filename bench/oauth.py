"""Token endpoint latency and the cost of authentication on `/api/v1`, measured against a real server.

    .venv/bin/python bench/oauth.py [--requests 2000] [--tokens 300]

Starts embedded PostgreSQL and Valkey in a temporary directory (or uses DATABASE_URL / REDIS_URL), runs one
uvicorn worker in its own process serving the app plus a trivial protected route, and measures from a
client on the same machine, one request at a time over a kept-alive connection:

- `POST /oauth/token`: client_credentials, and refresh_token with rotation (each call uses the new token);
- authentication overhead: p50 of `GET /api/v1/bench/ping` (JWT verification, the rate-limit/deny-list
  Lua call, scope guard, audit record) minus p50 of `GET /health` (same framework, no auth);
- in-process: JWT verification (first sight and cached) and one rate-limiter round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litestar import Litestar, get  # noqa: E402

from api.oauth.guards import requires_scope  # noqa: E402


@get("/api/v1/bench/ping", operation_id="benchPing", guards=[requires_scope("curriculum:read")])
async def ping() -> dict[str, str]:
    return {"status": "ok"}


def bench_app() -> Litestar:
    """The app with one trivial protected route (uvicorn factory)."""
    from api.app import create_app

    app = create_app()
    app.register(ping)
    return app


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": statistics.median(ordered), "p95": cut[94], "p99": cut[98], "n": len(ordered)}


def timed(call: Callable[[], Any], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def row(name: str, stats: dict[str, float]) -> str:
    return f"{name:<44} {stats['p50']:8.3f} {stats['p95']:8.3f} {stats['p99']:8.3f} {int(stats['n']):7d}"


async def prepare(env: dict[str, str]) -> dict[str, str]:
    """An app allowed every grant, a user, and an access + refresh token for them."""
    from api.accounts.services import create_user
    from api.apps.schemas import AppCreate
    from api.apps.services import create_app as register
    from api.lib.settings import Settings
    from api.oauth.runtime import standalone_runtime

    settings = Settings(
        **{"DATABASE_URL": env["DATABASE_URL"], "REDIS_URL": env["REDIS_URL"]},
        data_dir=env["SETU_DATA_DIR"],
        public_url=env["SETU_PUBLIC_URL"],
    )  # type: ignore[arg-type]
    async with standalone_runtime(settings) as runtime, runtime.sessions() as session:
        app, secret = await register(
            session,
            settings,
            AppCreate(
                name="Bench GPT",
                redirect_uris=["https://chatgpt.com/aip/g-bench/oauth/callback"],
                scopes=["curriculum:read"],
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
                rate_limit_per_minute=1_000_000,
                user_rate_limit_per_minute=1_000_000,
            ),
        )
        user, _ = await create_user(
            session, runtime.passwords, email=f"bench-{uuid.uuid4().hex[:8]}@example.test", role="teacher"
        )
        issued = await runtime.server.issue_tokens(
            session, app, user.id, ["curriculum:read"], uuid.uuid4(), refresh=True
        )
    return {
        "client_id": app.client_id,
        "client_secret": secret or "",
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token or "",
    }


async def in_process(env: dict[str, str], count: int) -> dict[str, dict[str, float]]:
    """Verification (first sight and cached) and one limiter call, without HTTP."""
    from api.lib.ratelimit import Limit
    from api.lib.settings import Settings
    from api.oauth.runtime import standalone_runtime

    settings = Settings(
        **{"DATABASE_URL": env["DATABASE_URL"], "REDIS_URL": env["REDIS_URL"]},
        data_dir=env["SETU_DATA_DIR"],
        public_url=env["SETU_PUBLIC_URL"],
    )  # type: ignore[arg-type]
    results: dict[str, dict[str, float]] = {}
    async with standalone_runtime(settings) as runtime:
        async with runtime.sessions() as session:
            key = await runtime.keys.signing_key(session)
        minted = [
            runtime.tokens.mint(
                key,
                app_id=uuid.uuid4(),
                client_id="setu_app_bench",
                user_id=uuid.uuid4(),
                scopes=["curriculum:read"],
                grant_id=uuid.uuid4(),
                rate_limits=(1_000_000, 1_000_000),
            )[0]
            for _ in range(count)
        ]
        first, cached, limiter = [], [], []
        for token in minted:
            started = time.perf_counter()
            await runtime.tokens.verify(token)
            first.append((time.perf_counter() - started) * 1000)
        for _ in range(count):
            started = time.perf_counter()
            await runtime.tokens.verify(minted[0])
            cached.append((time.perf_counter() - started) * 1000)
        app_id = uuid.uuid4()
        limits = [
            Limit("app", f"rl:{{{app_id}}}:app", 1_000_000),
            Limit("user", f"rl:{{{app_id}}}:user:1", 1_000_000),
        ]
        blocks = [f"oauth:{{{app_id}}}:blocked", f"oauth:{{{app_id}}}:jti:x", f"oauth:{{{app_id}}}:grant:y"]
        for _ in range(count):
            started = time.perf_counter()
            await runtime.limiter.acquire(limits, blocks=blocks)
            limiter.append((time.perf_counter() - started) * 1000)
    results["JWT verify, first sight (ES256)"] = percentiles(first)
    results["JWT verify, cached"] = percentiles(cached)
    results["rate limit + deny-list Lua call"] = percentiles(limiter)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per API measurement")
    parser.add_argument("--tokens", type=int, default=300, help="token requests per grant")
    args = parser.parse_args()

    from api.lib.embedded import EmbeddedServices
    from api.lib.migrate import upgrade_database
    from tests.utils.servers import free_port

    workdir = Path(tempfile.mkdtemp(prefix="setu-bench-"))
    services = None
    env = {**os.environ, "SETU_DATA_DIR": str(workdir), "SETU_LOG_LEVEL": "WARNING", "SETU_LOG_JSON": "true"}
    if not (env.get("DATABASE_URL") and env.get("REDIS_URL")):
        services = EmbeddedServices(
            workdir, postgres=not env.get("DATABASE_URL"), valkey=not env.get("REDIS_URL")
        )
        env.update(services.start())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env.update({"SETU_PUBLIC_URL": base, "SETU_PORT": str(port), "SETU_WORKER_EMBEDDED": "false"})
    server = None
    try:
        upgrade_database(env["DATABASE_URL"])
        credentials = asyncio.run(prepare(env))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "bench.oauth:bench_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(200):
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            bearer = {"Authorization": f"Bearer {credentials['access_token']}"}
            assert http.get("/api/v1/bench/ping", headers=bearer).status_code == 200
            auth = (credentials["client_id"], credentials["client_secret"])
            for _ in range(200):  # warm up both paths
                http.get("/health")
                http.get("/api/v1/bench/ping", headers=bearer)
            health = timed(lambda: http.get("/health"), args.requests)
            protected = timed(lambda: http.get("/api/v1/bench/ping", headers=bearer), args.requests)
            client_credentials = timed(
                lambda: http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=auth),
                args.tokens,
            )
            state = {"refresh": credentials["refresh_token"]}

            def refresh() -> None:
                answer = http.post(
                    "/oauth/token",
                    data={"grant_type": "refresh_token", "refresh_token": state["refresh"]},
                    auth=auth,
                )
                answer.raise_for_status()
                state["refresh"] = answer.json()["refresh_token"]

            refreshes = timed(refresh, args.tokens)
        micro = asyncio.run(in_process(env, min(args.requests, 1000)))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        if services is not None:
            services.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    h, p = percentiles(health), percentiles(protected)
    print(f"\nShikshaSetu OAuth benchmark: 1 uvicorn worker, {os.cpu_count()} CPUs, times in ms\n")
    print(f"{'':44} {'p50':>8} {'p95':>8} {'p99':>8} {'n':>7}")
    print(row("POST /oauth/token (client_credentials)", percentiles(client_credentials)))
    print(row("POST /oauth/token (refresh_token, rotated)", percentiles(refreshes)))
    print(row("GET /health (no auth)", h))
    print(row("GET /api/v1/bench/ping (Bearer JWT)", p))
    for name, stats in micro.items():
        print(row(f"in-process: {name}", stats))
    print(
        f"\nAuthenticated-request overhead (ping - health): p50 {p['p50'] - h['p50']:.3f} ms, "
        f"p95 {p['p95'] - h['p95']:.3f} ms"
    )


if __name__ == "__main__":
    main()
