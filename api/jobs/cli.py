"""`setu worker`: run the background job worker on its own (production), instead of inside the API."""

from __future__ import annotations

import asyncio
import signal

import click
import structlog
from click.core import ParameterSource
from prometheus_client import start_http_server

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
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    envvar="SETU_WORKER_METRICS_PORT",
    default=9101,
    show_default=True,
    help="Serve this worker's Prometheus metrics (setu_jobs_*) on this port; 0 serves none.",
)
@click.option(
    "--metrics-host",
    envvar="SETU_WORKER_METRICS_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics port listens on (0.0.0.0 for a Prometheus in another container).",
)
@click.pass_context
def worker_command(context: click.Context, metrics_port: int, metrics_host: str) -> None:
    """Process background jobs (memory embeddings, long content generation) until SIGINT/SIGTERM."""
    if metrics_port:
        try:
            start_http_server(metrics_port, addr=metrics_host)
        except OSError as error:
            problem = f"cannot serve metrics on {metrics_host}:{metrics_port} ({error.strerror or error})"
            if context.get_parameter_source("metrics_port") != ParameterSource.DEFAULT:
                raise click.ClickException(f"{problem}; choose another port, or 0 for none") from None
            # A second worker on one machine (development): work on, and say so.
            log.warning("worker runs without metrics", reason=problem, hint="set SETU_WORKER_METRICS_PORT")
        else:
            log.info("worker metrics", url=f"http://{metrics_host}:{metrics_port}/metrics")
    asyncio.run(_work())
