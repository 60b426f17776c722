"""`setu worker` as its own process: killed mid-job, the memory still ends up ready after a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.jobs.models import Job
from api.lib.settings import Settings
from api.memories import services
from api.memories.schemas import MemoryCreate

SETU = str(Path(sys.executable).with_name("setu"))


@contextmanager
def black_hole() -> Iterator[str]:
    """An HTTP 'server' that accepts connections and never answers: a worker calling it hangs mid-job."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def start_worker(settings: Settings, serving_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "SERVING_URL": serving_url,
        "SETU_JOB_LEASE_SECONDS": "2",
        "SETU_SERVING_TIMEOUT_SECONDS": "120",
        "SETU_LOG_JSON": "true",
    }
    return subprocess.Popen([SETU, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_for(
    sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, status: str, seconds: float
) -> Job:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with sessions() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            if job.status == status:
                return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {status!r} within {seconds} s")


async def test_a_worker_killed_mid_job_still_leaves_the_memory_ready_after_restart(
    sessions: async_sessionmaker[AsyncSession], ml_settings: Settings
) -> None:
    owner = services.Owner(app_id=uuid.uuid4(), user_id=uuid.uuid4())
    async with sessions() as session, session.begin():
        memory = await services.create_memory(
            session, owner, MemoryCreate(content="Meera revises maps"), ml_settings
        )
    assert memory.job_id is not None

    with black_hole() as hanging_serving:
        first = start_worker(ml_settings, hanging_serving)
        try:
            await wait_for(sessions, memory.job_id, "running", 60)  # claimed, now stuck calling serving
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)

    second = start_worker(ml_settings, ml_settings.serving_url or "")
    try:
        await wait_for(sessions, memory.job_id, "succeeded", 90)  # after the 2 s lease, it is re-queued
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, (second.stderr.read() if second.stderr else b"").decode()[-2000:]
    async with sessions() as session:
        stored = await services.get_memory(session, owner, memory.id)
        job = await session.get(Job, memory.job_id)
    assert stored.status == "ready"
    assert job is not None and job.attempts == 2
