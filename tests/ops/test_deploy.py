"""scripts/deploy: valid bash; its dry run checks the prerequisites for real and prints the whole plan, in
order, without changing anything; missing prerequisites stop it before the first step."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.ops.conftest import REPO, write_env_file

DEPLOY = str(REPO / "scripts/deploy")


def _deploy(compose: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "COMPOSE": " ".join(compose)}
    return subprocess.run([DEPLOY, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_deploy_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", DEPLOY], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_dry_run_prints_every_step_in_order(
    compose: list[str], placeholder_env: dict[str, str], tmp_path: Path
) -> None:
    env_file = write_env_file(tmp_path / "env", placeholder_env)
    result = _deploy(compose, "--dry-run", "--version", "1.4.0", "--env-file", str(env_file))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    steps = [
        "==> 1. prerequisites",
        "build api ray-head",
        "up -d --wait postgres redis pg-backup",
        "exec -T pg-backup setu-backup once predeploy-1.4.0",
        "run --rm --no-deps migrate",
        "-f /etc/shikshasetu/grafana-reader.sql",
        "up -d --wait --no-build --remove-orphans",
        "exec -T api setu curriculum load",
        "exec -T api setu verify --url https://setu.example.org",
        "==> 7. roll back, only if a step after the backup fails",
        "dry run: nothing was changed",
    ]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions, [step for step, at in zip(steps, positions, strict=True) if at == -1]
    assert positions == sorted(positions), "the steps are out of order"
    assert f"--env-file {env_file}" in out


def test_dry_run_verifies_the_url_given(
    compose: list[str], placeholder_env: dict[str, str], tmp_path: Path
) -> None:
    env_file = write_env_file(tmp_path / "env", placeholder_env)
    result = _deploy(
        compose, "--dry-run", "--version", "1.4.0", "--env-file", str(env_file), "--url", "https://a.example"
    )
    assert result.returncode == 0, result.stderr
    assert "setu verify --url https://a.example" in result.stdout


def test_pull_instead_of_build(compose: list[str], placeholder_env: dict[str, str], tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / "env", placeholder_env)
    result = _deploy(compose, "--dry-run", "--pull", "--version", "1.4.0", "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    assert "pull api ray-head ray-gpu-worker" in result.stdout
    assert " build " not in result.stdout


@pytest.mark.parametrize(
    ("args", "drop", "message"),
    [
        (["--dry-run"], None, "--version is required"),
        (["--dry-run", "--version", "../evil"], None, "--version must be a valid image tag"),
        (["--dry-run", "--version", "1.4.0"], "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN"),
        (["--dry-run", "--version", "1.4.0", "--bogus"], None, "unknown argument: --bogus"),
    ],
)
def test_missing_prerequisites_stop_before_any_step(
    args: list[str],
    drop: str | None,
    message: str,
    compose: list[str],
    placeholder_env: dict[str, str],
    tmp_path: Path,
) -> None:
    values = {key: value for key, value in placeholder_env.items() if key != drop}
    env_file = write_env_file(tmp_path / "env", values)
    result = _deploy(compose, *args, "--env-file", str(env_file))
    assert result.returncode != 0
    assert message in result.stderr
    assert "==> 2." not in result.stdout


def test_a_missing_env_file_is_named(compose: list[str], tmp_path: Path) -> None:
    result = _deploy(compose, "--dry-run", "--version", "1.4.0", "--env-file", str(tmp_path / "absent"))
    assert result.returncode != 0
    assert "absent is missing: copy docker/env.example" in result.stderr
