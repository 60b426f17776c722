"""Every metric an alert rule or a Grafana dashboard reads exists on a running stack.

The stack: the API in its own process (multi-process metrics, as in the image), a `setu worker` serving its
own metrics, and the Serve app on the session's real local Ray (its node's metrics export port). The flows
that produce the metrics run first (tokens, curriculum search, a memory stored and embedded by the worker,
a content call, errors and a rate-limit refusal), because a labelled metric only appears after its first
sample. Allowed to be missing: GPU families on a machine without a GPU, and `up` (Prometheus records it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.lib.settings import Settings
from tests.jobs.test_worker_process import SETU, wait_for
from tests.ops.test_monitoring import RAY_GPU_FAMILIES, _dashboard_queries, _metric_names, _rules
from tests.utils.oauth import issue_test_token, register_test_app
from tests.utils.servers import free_port

pytestmark = pytest.mark.ray

RECORDED_BY_PROMETHEUS = {"up"}
RAY_EXPORT_SECONDS = 90  # replicas push to their node's agent every few seconds; allow for a busy machine


def _named_metrics() -> dict[str, set[str]]:
    """Each metric the alert rules and dashboards read, with the rules and dashboards that read it."""
    named: dict[str, set[str]] = {}
    for rule in _rules():
        for metric in _metric_names(rule["expr"]):
            named.setdefault(metric, set()).add(f"alert {rule['alert']}")
    for dashboard, expressions in _dashboard_queries().items():
        for expression in expressions:
            for metric in _metric_names(expression):
                named.setdefault(metric, set()).add(dashboard)
    return named


@contextmanager
def _process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to `log`; stopped with SIGTERM (then killed) when the block ends."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def _answer(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> str:
    """The body at `url` once the process behind it answers 200 (fails with its log if it never does)."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            try:
                response = await http.get(url)
                if response.status_code == 200:
                    return response.text
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer; log:\n{_tail(log)}")
            await asyncio.sleep(0.3)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _sample_names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def _ray_node() -> tuple[str, bool]:
    """The metrics URL of the session's local Ray node, and whether the cluster has a GPU."""
    import ray

    if not ray.is_initialized():
        pytest.fail("no local Ray in this process: unset SERVING_URL so the serving_url fixture starts one")
    node = next(node for node in ray.nodes() if node["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return url, ray.cluster_resources().get("GPU", 0) > 0


async def _ray_series(url: str, wanted: set[str], serving_url: str) -> set[str]:
    """Ray's samples, scraped until every wanted name is there or the export interval has surely passed.

    Ray drops a gauge about two export intervals after its last report, so requests keep flowing through
    the Serve proxy and the batched embedder meanwhile, as production traffic would."""
    deadline = time.monotonic() + RAY_EXPORT_SECONDS
    async with httpx.AsyncClient(timeout=30) as http:
        for round_number in itertools.count():
            embedded = await http.post(
                f"{serving_url}/v1/embeddings", json={"input": [f"keeping the replicas busy {round_number}"]}
            )
            assert embedded.status_code == 200, embedded.text[:500]
            response = await http.get(url)
            assert response.status_code == 200, response.text[:500]
            names = _sample_names(response.text)
            if wanted <= names or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
    return names


async def _exercise(http: httpx.AsyncClient, settings: Settings) -> uuid.UUID:
    """The flows behind the metrics; returns the job id of the stored memory (for the worker)."""
    # OAuth: a client-credentials token, and a wrong secret.
    app, secret = await register_test_app(
        settings, grant_types=["client_credentials"], scopes=["curriculum:read"]
    )
    assert secret is not None
    granted = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, secret)
    )
    assert granted.status_code == 200, granted.text
    refused = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, "wrong")
    )
    assert refused.status_code == 401
    app_token = {"Authorization": f"Bearer {granted.json()['access_token']}"}

    # Curriculum: a search embeds the query through serving (Ray's batching, our serving client).
    found = await http.get("/api/v1/curriculum/standards", params={"q": "fractions"}, headers=app_token)
    assert found.status_code == 200, found.text
    bad = await http.get("/api/v1/curriculum/standards", params={"limit": 0}, headers=app_token)
    assert bad.status_code == 422

    # A teacher: content through the generator, a memory queued for the worker, a missing memory.
    teacher = await issue_test_token(settings, role="teacher")
    simplified = await http.post(
        "/api/v1/content/simplify",
        json={"text": "Photosynthesis converts light energy into chemical energy.", "class": 5},
        headers=teacher.headers,
    )
    assert simplified.status_code == 200, simplified.text
    stored = await http.post(
        "/api/v1/memories", json={"content": "Asha finds fractions hard"}, headers=teacher.headers
    )
    assert stored.status_code == 202, stored.text
    missing = await http.get(f"/api/v1/memories/{uuid.uuid4()}", headers=teacher.headers)
    assert missing.status_code == 404

    # A rate-limit refusal: an app allowed one request a minute asks twice.
    limited = await issue_test_token(settings, role="student", rate_limit_per_minute=1)
    statuses = [
        (await http.get("/api/v1/curriculum/boards", headers=limited.headers)).status_code for _ in range(2)
    ]
    assert statuses == [200, 429]
    return uuid.UUID(stored.json()["job_id"])


async def test_every_metric_in_alerts_and_dashboards_exists_on_a_running_stack(
    ml_settings: Settings, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    named = _named_metrics()
    ray_url, has_gpu = _ray_node()
    port, worker_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = ml_settings.model_copy(update={"public_url": base_url, "port": port})
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    env = {
        **{key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"},
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "SERVING_URL": settings.serving_url or "",
        "SETU_PUBLIC_URL": base_url,
        "SETU_DATA_DIR": str(settings.data_dir),  # the signing keys' encryption secret lives there
        "SETU_ENV": settings.env,
        "SETU_WORKER_EMBEDDED": "false",
        "SETU_LOG_JSON": "true",
    }
    api_command = [
        sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with _process(api_command, {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, api_log) as api:
        await _answer(f"{base_url}/health", api, api_log)
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            job_id = await _exercise(http, settings)
        worker_command = [SETU, "worker", "--metrics-port", str(worker_port)]
        with _process(worker_command, env, worker_log) as worker:
            await wait_for(sessions, job_id, "succeeded", 90)
            worker_metrics = await _answer(f"http://127.0.0.1:{worker_port}/metrics", worker, worker_log)
        api_metrics = await _answer(f"{base_url}/metrics", api, api_log)
    worker_series, api_series = _sample_names(worker_metrics), _sample_names(api_metrics)
    wanted_from_ray = {metric for metric in named if metric.startswith("ray_")}
    if not has_gpu:
        wanted_from_ray -= RAY_GPU_FAMILIES
    ray_series = await _ray_series(ray_url, wanted_from_ray, settings.serving_url or "")

    exported = api_series | worker_series | ray_series
    allowed = RECORDED_BY_PROMETHEUS | (set() if has_gpu else RAY_GPU_FAMILIES)
    missing = {metric: users for metric, users in named.items() if metric not in exported | allowed}
    assert not missing, "metrics read by alerts or dashboards that nothing exported:\n" + "\n".join(
        f"  {metric} (read by {', '.join(sorted(users))})" for metric, users in sorted(missing.items())
    )
    # The split the scrape config promises: jobs on the worker, the ML tier's own families on Ray.
    assert {"setu_jobs_total", "setu_jobs_backlog", "setu_job_duration_seconds_bucket"} <= worker_series
    assert "setu_http_requests_total" in api_series
    assert {"ray_setu_ml_tokens_generated_total", "ray_serve_deployment_replica_healthy"} <= ray_series
