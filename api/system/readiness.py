"""Readiness checks: each dependency answers ok or failed with a reason, within a short timeout."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

DEPENDENCY_UP = Gauge(
    "setu_dependency_up",
    "1 when the component answered its last probe (every 10 s), 0 when it did not.",
    ["component"],
    multiprocess_mode="min",
)
POOL_CHECKED_OUT = Gauge(
    "setu_db_pool_checked_out", "Database connections in use by this process.", multiprocess_mode="sum"
)
POOL_CAPACITY = Gauge(
    "setu_db_pool_capacity",
    "Database connections this process may open (pool size + overflow).",
    multiprocess_mode="sum",
)
PROBE_INTERVAL_SECONDS = 10.0
_failing_since: dict[str, float] = {}
"""component -> when this process first saw it fail (UNIX time), while it keeps failing."""


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """One dependency to probe; `required` ones make /ready answer 503 when they fail."""

    name: str
    probe: Callable[[], Awaitable[None]]
    required: bool = True


def database_check(engine: AsyncEngine) -> ReadinessCheck:
    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return ReadinessCheck("database", probe)


def redis_check(redis: Redis) -> ReadinessCheck:
    async def probe() -> None:
        await redis.ping()

    return ReadinessCheck("redis", probe)


async def run_checks(checks: list[ReadinessCheck], timeout: float) -> tuple[bool, dict[str, dict[str, str]]]:  # noqa: ASYNC109
    """Probe every dependency concurrently; return overall readiness and a report per component."""

    async def one(check: ReadinessCheck) -> dict[str, str]:
        try:
            await asyncio.wait_for(check.probe(), timeout)
        except TimeoutError:
            return {"status": "failed", "reason": f"no answer within {timeout:g} s"}
        except Exception as error:  # a readiness probe reports any failure; it never raises
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return {"status": "failed", "reason": f"{type(error).__name__}: {reason}"[:300]}
        return {"status": "ok"}

    results = await asyncio.gather(*(one(check) for check in checks))
    report = {}
    ready = True
    for check, result in zip(checks, results, strict=True):
        DEPENDENCY_UP.labels(check.name).set(1 if result["status"] == "ok" else 0)
        if result["status"] == "ok":
            _failing_since.pop(check.name, None)
        else:
            _failing_since.setdefault(check.name, time.time())
        if not check.required:
            result["required"] = "false"
        elif result["status"] != "ok":
            ready = False
        report[check.name] = result
    return ready, report


def degraded_components(
    checks: list[ReadinessCheck], report: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """The optional components that fail now (degraded mode: the service runs without them), with the
    reason and since when this process has seen them fail."""
    degraded = {}
    for check in checks:
        result = report.get(check.name, {})
        if not check.required and result.get("status") == "failed":
            since = datetime.datetime.fromtimestamp(_failing_since.get(check.name, time.time()), datetime.UTC)
            degraded[check.name] = {"reason": result.get("reason", ""), "since": since.isoformat()}
    return degraded


async def watch_dependencies(
    checks: Callable[[], list[ReadinessCheck]],
    engine: AsyncEngine,
    timeout: float,  # noqa: ASYNC109
) -> None:
    """Keep `setu_dependency_up` and the pool gauges current, so alerts fire without anyone calling /ready."""
    pool: Any = engine.pool
    while True:
        await run_checks(checks(), timeout)
        POOL_CHECKED_OUT.set(pool.checkedout())
        POOL_CAPACITY.set(pool.size() + getattr(pool, "_max_overflow", 0))
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)
