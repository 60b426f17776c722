"""The GitHub workflow is valid for GitHub (its vendored workflow schema) and runs what we promise: lint,
types, README's `make test`, a coverage floor, the GPT schema artefact diff and both image builds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.openapi.test_schemas import EXAMPLE_SERVER, PUBLISHED
from tests.ops.conftest import DOCKER, REPO

WORKFLOW = REPO / ".github/workflows/ci.yml"
JOBS = {"lint", "types", "tests", "coverage", "schema", "images"}


def _workflow() -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    loaded["on"] = loaded.pop(True, loaded.get("on"))  # YAML 1.1 reads the bare key `on` as true
    return loaded


def _runs(job: str) -> str:
    """Every shell command of a job, one after another."""
    return "\n".join(step["run"] for step in _workflow()["jobs"][job]["steps"] if "run" in step)


def _makefile_recipe(target: str) -> str:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return "\n".join(recipe)


def test_the_workflow_is_valid_for_github() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    if not checker.is_file():
        pytest.fail("check-jsonschema is missing: it is in the dev extras (`make test` installs them)")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_on_pushes_to_main_and_pull_requests_with_every_job() -> None:
    workflow = _workflow()
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in workflow["on"]
    assert set(workflow["jobs"]) == JOBS
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 90, name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+|[0-9a-f]{40})", step["uses"]), step["uses"]


def test_lint_and_types_run_ruff_and_mypy() -> None:
    lint = _runs("lint")
    assert "ruff check" in lint and "ruff format --check ." in lint
    assert _runs("types") == "make typecheck"
    assert "$(BIN)/mypy" in _makefile_recipe("typecheck")


def test_the_tests_job_is_readmes_make_test_through_ci_run() -> None:
    assert _runs("tests") == "bash .ci/run"
    assert "make test" in (REPO / ".ci/run").read_text().splitlines()
    assert "make test" in (REPO / "README.md").read_text()
    # Debian, like the development machines: Debian's promtool, amtool and chromium install there.
    assert _workflow()["jobs"]["tests"]["container"]["image"].endswith("-bookworm")


def test_the_coverage_job_fails_below_a_real_floor() -> None:
    assert _runs("coverage") == "make coverage"
    recipe = _makefile_recipe("coverage")
    assert "$(BIN)/coverage run -m pytest" in recipe
    assert "--fail-under=$(COVERAGE_FLOOR)" in recipe
    floor = re.search(r"^COVERAGE_FLOOR \?= (\d+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert floor is not None and int(floor.group(1)) >= 70


def test_the_schema_job_regenerates_the_published_gpt_schema_and_diffs_it() -> None:
    published = PUBLISHED.relative_to(REPO)
    commands = _runs("schema")
    assert f"setu docs gpt-actions --server-url {EXAMPLE_SERVER} -o {published}" in commands
    assert f"git diff --exit-code -- {published}" in commands


def test_the_images_job_builds_every_dockerfile() -> None:
    job = _workflow()["jobs"]["images"]
    images = set(job["strategy"]["matrix"]["image"])
    assert images == {path.name.removesuffix(".Dockerfile") for path in DOCKER.glob("*.Dockerfile")}
    build = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("docker/build-push"))
    assert build["with"]["file"] == "docker/${{ matrix.image }}.Dockerfile"
    assert build["with"]["context"] == "."
    assert build["with"]["push"] is False
