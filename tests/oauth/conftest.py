"""A real uvicorn serving the app on a free port, for the OAuth client library and the browser."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

from api.app import create_app
from api.lib.settings import Settings
from tests.utils.servers import free_port


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    settings: Settings


@pytest.fixture(scope="session")
def live_server(settings: Settings) -> Iterator[LiveServer]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    live_settings = settings.model_copy(update={"public_url": base_url, "port": port})
    config = uvicorn.Config(
        create_app(live_settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield LiveServer(base_url, live_settings)
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture
def insecure_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authlib refuses plain-http OAuth endpoints unless told the test server is local."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
