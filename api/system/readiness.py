"""Readiness checks: each dependency answers ok or failed with a reason, within a short timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


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
        if not check.required:
            result["required"] = "false"
        elif result["status"] != "ok":
            ready = False
        report[check.name] = result
    return ready, report
