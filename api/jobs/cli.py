"""`setu worker`: run the background job worker on its own (production), instead of inside the API."""

from __future__ import annotations

import asyncio
import signal

import click
import structlog

from api.lib.db import standalone_sessions
from api.lib.serving import ServingClient
from api.lib.settings import get_settings

log = structlog.get_logger("api.jobs")


async def _work() -> None:
    settings = get_settings()
    from api.worker import build_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    serving = ServingClient.from_settings(settings)
    try:
        async with standalone_sessions(settings) as sessions:
            worker = build_worker(settings, sessions, serving)
            log.info("worker started", concurrency=worker.concurrency, lease_seconds=worker.lease_seconds)
            await worker.run(stop)
    finally:
        await serving.aclose()
    log.info("worker stopped")


@click.command("worker")
def worker_command() -> None:
    """Process background jobs (memory embeddings, long content generation) until SIGINT/SIGTERM."""
    asyncio.run(_work())
