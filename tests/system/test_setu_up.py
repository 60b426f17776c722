"""`setu up` (what `make run` starts): embedded servers, readiness, clean stop, data kept across restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.utils.servers import free_port

SETU = str(Path(sys.executable).with_name("setu"))


def _environment(data_dir: Path, port: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k not in {"DATABASE_URL", "REDIS_URL", "SERVING_URL"}}
    env.update({"SETU_DATA_DIR": str(data_dir), "SETU_PORT": str(port), "SETU_LOG_JSON": "true"})
    return env


def _servers_under(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(data_dir) in cmdline and ("postgres" in cmdline or "valkey" in cmdline):
            found.append(process)
    return found


def service_log(data_dir: Path) -> Path:
    """Where `running_service` writes the output of `setu up` (beside the data dir, not in a pipe)."""
    return data_dir.parent / f"{data_dir.name}-setu-up.log"


@contextmanager
def running_service(
    data_dir: Path, *, env: dict[str, str] | None = None, ready_within: float = 150, port: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`setu up` on a free port (or `port`) with `env` (default: this process's environment) as the base of
    its environment; yields once /ready is 200."""
    port = port or free_port()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with service_log(data_dir).open("ab") as log:
        process = subprocess.Popen(
            [SETU, "up"], env=_environment(data_dir, port, env), stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # Functional, not a timing test: on a busy machine the local Ray alone can take a minute.
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                pytest.fail(f"setu up exited early:\n{service_log(data_dir).read_text()[-5000:]}")
            time.sleep(0.3)
        else:
            pytest.fail(f"setu up did not become ready within {ready_within:g} s")
        yield process, base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def test_setu_up_serves_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_service(data_dir) as (process, base):
        ready = httpx.get(f"{base}/ready").json()
        assert ready["components"]["database"]["status"] == "ok"
        assert ready["components"]["redis"]["status"] == "ok"
        assert "setu_http_requests_total" in httpx.get(f"{base}/metrics").text
        assert len(_servers_under(data_dir)) >= 2
        marker = subprocess.run(
            [
                str(Path(sys.executable).parent / "python"),
                "-c",
                "import os, redis; r = redis.Redis.from_url(os.environ['URL']); r.set('marker', 'kept')",
            ],
            env={**os.environ, "URL": f"unix://{data_dir / 'valkey' / 'valkey.sock'}"},
            check=False,
        )
        assert marker.returncode == 0
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) in (0, 1, 130, -2)
    assert _servers_under(data_dir) == [], "a postgres or valkey process outlived setu up"

    with running_service(data_dir) as (process, base):
        import redis as redis_sync

        kept = redis_sync.Redis.from_url(f"unix://{data_dir / 'valkey' / 'valkey.sock'}").get("marker")
        assert kept == b"kept"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert _servers_under(data_dir) == []


def test_unreachable_database_url_stops_start_up_naming_it(tmp_path: Path) -> None:
    env = _environment(tmp_path, free_port())
    env["DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    result = subprocess.run([SETU, "up"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "cannot connect" in result.stderr
    assert _servers_under(tmp_path) == []
