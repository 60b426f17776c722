"""The API image's entry point, run here as the image runs it: `migrate`, then `serve` (uvicorn with
SETU_WORKERS worker processes) on the real test PostgreSQL and Valkey."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.ops.conftest import DOCKER
from tests.utils.servers import free_port

ENTRYPOINT = str(DOCKER / "entrypoints/api.sh")


def _image_environment(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """The variables docker/api.Dockerfile and compose.prod.yaml set, pointing at the test servers."""
    drop = {"DATABASE_URL", "REDIS_URL", "SERVING_URL", "PROMETHEUS_MULTIPROC_DIR"}
    env = {key: value for key, value in os.environ.items() if key not in drop and not key.startswith("SETU_")}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SERVING_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: serving is down
            "SETU_ENV": "production",
            "SETU_PUBLIC_URL": "https://setu.example.org",
            "SETU_SIGNING_KEY_SECRET": "entrypoint-test-secret",
            "SETU_HOST": "127.0.0.1",
            "SETU_PORT": str(free_port()),
            "SETU_WORKERS": "2",
            "SETU_LOG_JSON": "true",
            "SETU_DATA_DIR": str(tmp_path / "data"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        }
    )
    return env


def test_migrate_applies_the_schema_and_exits(database_url: str, redis_url: str, tmp_path: Path) -> None:
    env = _image_environment(database_url, redis_url, tmp_path)
    result = subprocess.run([ENTRYPOINT, "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_serve_refuses_to_start_without_a_database(tmp_path: Path) -> None:
    env = _image_environment("", "redis://127.0.0.1:1/0", tmp_path)
    del env["DATABASE_URL"]
    result = subprocess.run([ENTRYPOINT, "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "DATABASE_URL must point at PostgreSQL" in result.stderr


def test_serve_runs_workers_that_share_one_metrics_view_and_stop_on_sigterm(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = _image_environment(database_url, redis_url, tmp_path)
    stale = Path(env["PROMETHEUS_MULTIPROC_DIR"]) / "counter_99999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from a previous container run")
    base = f"http://127.0.0.1:{env['SETU_PORT']}"
    server = subprocess.Popen(
        [ENTRYPOINT, "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                pytest.fail(f"serve exited early:\n{server.stdout.read().decode() if server.stdout else ''}")
            time.sleep(0.3)
        else:
            pytest.fail("the API did not answer /health within 90 s")
        assert not stale.exists(), "stale multi-process metrics were kept"
        workers = psutil.Process(server.pid).children(recursive=True)
        assert len([worker for worker in workers if "python" in worker.name().lower()]) >= 2

        with httpx.Client(base_url=base, timeout=5) as client:
            for _ in range(30):  # new connections, so both workers answer some
                assert client.get("/health", headers={"Connection": "close"}).status_code == 200
            metrics = client.get("/metrics").text
            ready = client.get("/ready")
        counted = sum(
            float(value)
            for value in re.findall(
                r'^setu_http_requests_total\{[^}]*route="/health"[^}]*status="200"[^}]*\} (\S+)$',
                metrics,
                flags=re.MULTILINE,
            )
        )
        assert counted >= 30, f"/metrics counts {counted} of 30 requests: workers are not aggregated"
        components = ready.json()["components"]
        assert components["database"]["status"] == "ok"
        assert components["redis"]["status"] == "ok"
        assert components["serving"]["status"] == "failed"  # optional: the API keeps serving without ML
    finally:
        children = psutil.Process(server.pid).children(recursive=True) if server.poll() is None else []
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            pytest.fail("serve did not stop within 40 s of SIGTERM")
        _, alive = psutil.wait_procs(children, timeout=10)
        for process in alive:
            process.kill()
    assert code == 0
    assert not alive, f"worker processes outlived the server: {alive}"
