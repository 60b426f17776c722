"""A cancelled half-open probe (e.g. a /ready probe timing out) must not leave the breaker stuck open."""

from __future__ import annotations

import asyncio

import pytest

from api.lib.serving import BreakerState, CircuitBreaker, ServingClient


async def test_a_cancelled_half_open_probe_lets_the_next_call_probe_again() -> None:
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept the connection, send nothing: the call hangs until cancelled

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=0.05)
    client = ServingClient(f"http://127.0.0.1:{port}", timeout=30, retries=0, breaker=breaker)
    try:
        breaker.record_failure()
        assert breaker.state is BreakerState.OPEN
        await asyncio.sleep(0.1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.models(), 0.3)  # the half-open probe, cancelled
        assert breaker.admit(), "the cancelled probe is still counted as in flight"
    finally:
        await client.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
