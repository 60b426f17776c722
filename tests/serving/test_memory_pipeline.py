"""The memory embedding pipeline end to end on the real ML tier: memories offered at 50/s are all embedded
(nothing lost) with p95 from creation (the API's 202) to `ready` within 2 s. The worker is the real one
(api.worker.build_worker: concurrency, sweepers) with the real serving client (coalesced embed calls).

By default a short run (2 s) checks only that nothing is lost; with SETU_PIPELINE_SECONDS (the issue's check
is 60) it is the load measurement and asserts the offered rate and the p95. SETU_PIPELINE_CONCURRENCY
overrides the worker's concurrency (SETU_WORKER_CONCURRENCY)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.lib.serving import ServingClient
from api.lib.settings import Settings
from api.memories import services
from api.memories.models import Memory
from api.memories.schemas import MemoryCreate
from api.worker import build_worker, running_worker

pytestmark = pytest.mark.ray

RATE = 50.0
MEASURING = "SETU_PIPELINE_SECONDS" in os.environ
SECONDS = float(os.environ.get("SETU_PIPELINE_SECONDS", "2"))
P95_LIMIT_SECONDS = 2.0


async def test_memories_offered_at_50_per_second_are_ready_within_2_s_at_p95(
    sessions: async_sessionmaker[AsyncSession], ml_settings: Settings
) -> None:
    update: dict[str, object] = {"memory_max_per_user": 1_000_000}
    if "SETU_PIPELINE_CONCURRENCY" in os.environ:
        update["worker_concurrency"] = int(os.environ["SETU_PIPELINE_CONCURRENCY"])
    settings = ml_settings.model_copy(update=update)
    client = ServingClient.from_settings(settings)
    worker = build_worker(settings, sessions, client)
    owner = services.Owner(app_id=uuid.uuid4(), user_id=uuid.uuid4())
    total = int(RATE * SECONDS)
    ids: list[uuid.UUID] = []
    try:
        async with running_worker(worker):
            started = time.perf_counter()
            for index in range(total):
                await asyncio.sleep(max(0.0, started + index / RATE - time.perf_counter()))
                data = MemoryCreate(content=f"Learner {index % 97} finds topic {index} hard; revise it.")
                async with sessions() as session, session.begin():
                    memory = await services.create_memory(session, owner, data, settings)
                ids.append(memory.id)
            offered = total / (time.perf_counter() - started)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                async with sessions() as session:
                    pending = await session.scalar(
                        select(func.count()).where(Memory.id.in_(ids), Memory.status != "ready")
                    )
                if not pending:
                    break
                await asyncio.sleep(0.25)
    finally:
        await client.aclose()
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Memory.status, Memory.created_at, Memory.updated_at, Memory.embedding).where(
                    Memory.id.in_(ids)
                )
            )
        ).all()
    ready = [row for row in rows if row.status == "ready"]
    latencies = sorted((row.updated_at - row.created_at).total_seconds() for row in ready) or [float("inf")]
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    drained = max(row.updated_at for row in ready) - min(row.created_at for row in rows) if ready else None
    print(
        f"\n{total} memories offered at {offered:.1f}/s, {len(ready)} ready"
        f" (last {drained.total_seconds() if drained else float('nan'):.1f} s after the first was created):"
        f" p50 {statistics.median(latencies):.3f} s, p95 {p95:.3f} s, max {latencies[-1]:.3f} s to ready;"
        f" {client.coalescer.calls} embedding requests, worker concurrency {settings.worker_concurrency}"
        f" (load {os.getloadavg()[0]:.1f})"
    )
    assert len(rows) == total
    assert len(ready) == total  # nothing lost
    assert all(row.embedding is not None and len(row.embedding) == 384 for row in rows)
    if MEASURING:
        assert offered > RATE * 0.9
        assert p95 <= P95_LIMIT_SECONDS
