"""The compose files are valid for Compose v2, demand their secrets, and describe the stacks we promise."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ops.conftest import COMPOSE_FILES, REPO, write_env_file


def _run_compose(
    compose: list[str], file: Path, env_file: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    # A clean environment, so neither the caller's variables nor a developer's docker/.env leak in.
    environment = {"PATH": os.environ["PATH"], "HOME": str(env_file.parent)}
    return subprocess.run(
        [*compose, "--env-file", str(env_file), "-f", str(file), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def _rendered(compose: list[str], file: Path, env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    env_file = write_env_file(tmp_path / "env", env)
    result = _run_compose(compose, file, env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    rendered: dict[str, Any] = json.loads(result.stdout)
    return rendered


@pytest.mark.parametrize("stack", sorted(COMPOSE_FILES))
def test_compose_file_is_valid(
    stack: str, compose: list[str], placeholder_env: dict[str, str], tmp_path: Path
) -> None:
    env_file = write_env_file(tmp_path / "env", placeholder_env)
    result = _run_compose(compose, COMPOSE_FILES[stack], env_file, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("stack", "variable"),
    [
        ("development", "POSTGRES_PASSWORD"),
        ("development", "SETU_SIGNING_KEY_SECRET"),
        ("development", "GRAFANA_ADMIN_PASSWORD"),
        ("production", "POSTGRES_PASSWORD"),
        ("production", "SETU_PUBLIC_URL"),
        ("production", "RAY_AUTH_TOKEN"),
        ("production", "TLS_CERT_DIR"),
        ("production", "ALERT_WEBHOOK_URL_FILE"),
        ("production", "SETU_VERSION"),
    ],
)
def test_a_missing_secret_stops_compose_and_is_named(
    stack: str, variable: str, compose: list[str], placeholder_env: dict[str, str], tmp_path: Path
) -> None:
    values = {key: value for key, value in placeholder_env.items() if key != variable}
    env_file = write_env_file(tmp_path / "env", values)
    result = _run_compose(compose, COMPOSE_FILES[stack], env_file, "config", "-q")
    assert result.returncode != 0
    assert variable in result.stderr


@pytest.mark.parametrize("stack", sorted(COMPOSE_FILES))
def test_every_secret_comes_from_the_env_file(
    stack: str, compose: list[str], placeholder_env: dict[str, str], tmp_path: Path
) -> None:
    services = _rendered(compose, COMPOSE_FILES[stack], placeholder_env, tmp_path)["services"]
    supplied = set(placeholder_env.values())
    checked = 0
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith(("PASSWORD", "SECRET", "TOKEN")):
                assert value in supplied, f"{name}: {key} is written in the compose file"
                checked += 1
    assert checked >= 3


def test_development_stack_has_every_service(
    compose: list[str], placeholder_env: dict[str, str], tmp_path: Path
) -> None:
    services = _rendered(compose, COMPOSE_FILES["development"], placeholder_env, tmp_path)["services"]
    assert set(services) >= {"api", "postgres", "redis", "ray-head", "prometheus", "grafana"}
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg1")
    assert services["ray-head"]["environment"]["SERVE_CONFIG"].endswith(".yaml")
    assert services["api"]["environment"]["SERVING_URL"] == "http://ray-head:8000"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond this machine"


def test_production_stack_is_replicated_limited_rotated_and_backed_up(
    compose: list[str], placeholder_env: dict[str, str], tmp_path: Path
) -> None:
    services = _rendered(compose, COMPOSE_FILES["production"], placeholder_env, tmp_path)["services"]
    assert set(services) >= {
        "nginx", "api", "migrate", "postgres", "pg-backup", "redis", "ray-head", "ray-gpu-worker",
        "prometheus", "alertmanager", "grafana",
    }  # fmt: skip
    assert services["api"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["api"], "the API is reached through nginx only"
    assert {port["target"] for port in services["nginx"]["ports"]} == {80, 443}
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["api"]["environment"]["SETU_ENV"] == "production"
    assert services["pg-backup"]["command"] == ["schedule"]
    devices = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["ray-head"]["environment"]["RAY_AUTH_MODE"] == "token"
    for name, service in services.items():
        if name != "migrate":
            assert service["deploy"]["resources"]["limits"]["memory"], f"{name} has no memory limit"
        assert service["logging"]["options"]["max-size"], f"{name} logs are not rotated"


@pytest.mark.parametrize("stack", sorted(COMPOSE_FILES))
def test_the_serve_config_each_ray_head_deploys_is_in_the_repository(
    stack: str, compose: list[str], placeholder_env: dict[str, str], tmp_path: Path
) -> None:
    services = _rendered(compose, COMPOSE_FILES[stack], placeholder_env, tmp_path)["services"]
    config = services["ray-head"]["environment"]["SERVE_CONFIG"]
    assert config.startswith("/app/cluster/")
    assert (REPO / config.removeprefix("/app/")).is_file(), f"{stack}: {config} is not in cluster/"
