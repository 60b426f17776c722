"""`setu worker` on its own serves its Prometheus metrics (the job counters the alerts read)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.lib.settings import Settings
from api.memories import services
from api.memories.schemas import MemoryCreate
from api.memories.services import EMBED_JOB
from tests.jobs.test_worker_process import SETU, wait_for
from tests.utils.servers import free_port


def _worker(settings: Settings, *args: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "SERVING_URL": settings.serving_url or "",
        "SETU_LOG_JSON": "true",
        **env,
    }
    return subprocess.Popen(
        [SETU, "worker", *args], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _stop(worker: subprocess.Popen[bytes]) -> str:
    worker.send_signal(signal.SIGTERM)
    status = worker.wait(timeout=30)
    log = (worker.stderr.read() if worker.stderr else b"").decode()
    assert status == 0, log[-2000:]
    return log


async def _started(worker: subprocess.Popen[bytes]) -> str:
    """The worker's log up to its `worker started` line (or to its exit)."""
    assert worker.stderr is not None
    stream, lines = worker.stderr, []

    def read() -> None:
        for line in stream:
            lines.append(line.decode())
            if "worker started" in lines[-1]:
                return

    await asyncio.wait_for(asyncio.to_thread(read), 60)
    return "".join(lines)


async def _scrape(url: str, seconds: float = 30) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The worker's samples by name and labels, once its metrics port answers."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as http:
        while True:
            try:
                response = await http.get(url)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_a_worker_on_its_own_exports_its_job_metrics(
    sessions: async_sessionmaker[AsyncSession], ml_settings: Settings
) -> None:
    owner = services.Owner(app_id=uuid.uuid4(), user_id=uuid.uuid4())
    async with sessions() as session, session.begin():
        memory = await services.create_memory(
            session, owner, MemoryCreate(content="Arjun practises fractions"), ml_settings
        )
    assert memory.job_id is not None
    port = free_port()
    worker = _worker(ml_settings, SETU_WORKER_METRICS_PORT=str(port), SETU_WORKER_METRICS_HOST="127.0.0.1")
    try:
        await wait_for(sessions, memory.job_id, "succeeded", 90)
        samples = await _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        log = _stop(worker)
    assert f"http://127.0.0.1:{port}/metrics" in log
    kind = frozenset({("kind", EMBED_JOB), ("outcome", "succeeded")})
    assert samples[("setu_jobs_total", kind)] == 1.0
    assert samples[("setu_job_duration_seconds_count", frozenset({("kind", EMBED_JOB)}))] == 1.0
    # Swept at start, before the job ran: the backlog gauge the JobBacklog alert reads is exported.
    assert any(name == "setu_jobs_backlog" for name, _ in samples)


async def test_metrics_port_zero_serves_none_and_a_taken_port_is_refused_by_name(
    ml_settings: Settings,
) -> None:
    quiet = _worker(ml_settings, "--metrics-port", "0")
    started = await _started(quiet)
    assert "worker started" in started, started[-2000:]
    assert "worker metrics" not in started + _stop(quiet)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = _worker(ml_settings, "--metrics-port", str(port))
        status = await asyncio.to_thread(refused.wait, 60)
    message = (refused.stderr.read() if refused.stderr else b"").decode()
    assert status == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in message
