"""`setu verify` against real deployments: a healthy https one with a client-credentials app passes every
check; a wrong secret, a stopped server and a hidden /metrics fail, each with its reason and exit status 1."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from api.lib.settings import Settings
from api.verify.checks import CREDENTIALS_HINT, Outcome, Target, verify
from tests.utils.oauth import run_setu
from tests.utils.servers import free_port
from tests.verify.conftest import Deployment

SETU = Path(sys.executable).parent / "setu"
EVERY_CHECK = [
    "health",
    "ready.database",
    "ready.redis",
    "ready.serving",
    "ready.generation",
    "metrics",
    "oauth-metadata",
    "client-credentials-token",
    "jwks",
    "gpt-schema",
    "authenticated-call",
]


async def _setu_verify(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`setu verify ...` in its own process, as an operator (or scripts/deploy) runs it."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SETU_VERIFY_")}
    environment.update(env)
    return await asyncio.to_thread(
        subprocess.run,
        [str(SETU), "verify", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def _report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in report["checks"]}


def _details(report: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["detail"] for check in report["checks"]}


async def _client_credentials_app(settings: Settings) -> tuple[str, str]:
    """Registered the way an operator does it: `setu apps create --grant client_credentials --json`."""
    result = await run_setu(
        settings,
        "apps", "create", "--name", "Deployment check", "--grant", "client_credentials",
        "--scope", "curriculum:read", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    return created["app"]["client_id"], created["client_secret"]


async def test_every_check_passes_against_an_https_deployment_with_a_client_credentials_app(
    https_deployment: Deployment,
) -> None:
    client_id, secret = await _client_credentials_app(https_deployment.settings)
    result = await _setu_verify(
        "--url", https_deployment.url, "--ca-file", str(https_deployment.ca_file), "--json",
        SETU_VERIFY_CLIENT_ID=client_id, SETU_VERIFY_CLIENT_SECRET=secret,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = _report(result)
    assert list(_outcomes(report)) == EVERY_CHECK
    assert report["ok"] is True
    assert report["counts"] == {"pass": len(EVERY_CHECK), "warn": 0, "skip": 0, "fail": 0}, report
    details = _details(report)
    assert f"issuer {https_deployment.url};" in details["oauth-metadata"]
    assert "5 endpoints absolute and answering" in details["oauth-metadata"]
    assert f"on {https_deployment.url}, within the GPT limits" in details["gpt-schema"]
    assert f"curriculum:read for {client_id}" in details["client-credentials-token"]
    assert details["jwks"].endswith("; the token verifies with them")
    assert "200 with the token, 401 without" in details["authenticated-call"]


async def test_a_wrong_secret_fails_the_token_check_with_the_reason_and_exits_non_zero(
    https_deployment: Deployment,
) -> None:
    client_id, _ = await _client_credentials_app(https_deployment.settings)
    result = await _setu_verify(
        "--url", https_deployment.url, "--ca-file", str(https_deployment.ca_file),
        "--client-id", client_id, "--client-secret", "not-the-secret",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") == 4}
    assert "FAIL" in rows["client-credentials-token"]
    assert "answered 401, not 200: invalid_client" in result.stdout
    assert "skip" in rows["authenticated-call"]
    assert [name for name, row in rows.items() if "FAIL" in row] == ["client-credentials-token"]
    assert "PASS" in rows["health"] and "PASS" in rows["gpt-schema"]
    assert ", 1 failed, " in result.stdout


async def test_a_stopped_server_fails_every_check_with_the_reason() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = await _setu_verify("--url", url, "--json", "--client-id", "app", "--client-secret", "secret")
    assert result.returncode == 1, result.stdout + result.stderr
    report = _report(result)
    outcomes, details = _outcomes(report), _details(report)
    assert report["ok"] is False
    assert outcomes.pop("authenticated-call") == "skip"
    assert list(outcomes) == [
        "health", "ready", "metrics", "oauth-metadata", "client-credentials-token", "jwks", "gpt-schema",
    ]  # fmt: skip
    assert set(outcomes.values()) == {"fail"}
    for name in outcomes:
        assert "ConnectError" in details[name], details[name]
    assert details["health"].startswith(f"GET {url}/health: ConnectError")


async def test_a_local_http_deployment_without_credentials_warns_and_skips_but_does_not_fail(
    http_deployment: Deployment,
) -> None:
    result = await _setu_verify("--url", http_deployment.url, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _report(result)
    outcomes, details = _outcomes(report), _details(report)
    assert report["counts"]["fail"] == 0, report
    # GPTs need https: the deployment withholds its GPT schema and verify reports why.
    assert outcomes["gpt-schema"] == "warn"
    assert details["gpt-schema"].startswith(f"withheld while the public URL is http ({http_deployment.url})")
    assert "503: GPT Actions need an absolute https server URL" in details["gpt-schema"]
    assert "SETU_PUBLIC_URL" in details["gpt-schema"]
    # Skipped, not passed, when no credentials are given.
    assert outcomes["client-credentials-token"] == "skip"
    assert details["client-credentials-token"] == CREDENTIALS_HINT
    assert outcomes["authenticated-call"] == "skip"
    # No ML tier here: optional components are down, which is a warning with the reason.
    assert outcomes["ready.serving"] == "warn"
    assert details["ready.serving"].startswith("optional, down: ")
    assert outcomes["ready.database"] == outcomes["ready.redis"] == outcomes["metrics"] == "pass"


async def test_metrics_kept_off_the_public_address_fail_the_metrics_check(
    http_deployment: Deployment,
) -> None:
    """Production's nginx answers 404 on /metrics: verify must be pointed at the replica's own port."""
    hidden = Target(http_deployment.url, metrics_url=f"{http_deployment.url}/internal/metrics")
    results = {result.name: result for result in await asyncio.to_thread(verify, hidden)}
    assert results["metrics"].outcome == Outcome.FAIL
    assert "answered 404, not 200" in results["metrics"].detail
    direct = Target(http_deployment.url, metrics_url=f"{http_deployment.url}/metrics")
    results = {result.name: result for result in await asyncio.to_thread(verify, direct)}
    assert results["metrics"].outcome == Outcome.PASS
