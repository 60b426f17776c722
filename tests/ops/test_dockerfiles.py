"""The images' Dockerfiles: hadolint-clean, multi-stage, non-root, health-checked, and buildable from this
tree (every file they copy exists and survives .dockerignore). The images' and deploy's shell: shellcheck."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from tests.ops.conftest import DOCKER, REPO

DOCKERFILES = {"api": DOCKER / "api.Dockerfile", "ray-gpu": DOCKER / "ray-gpu.Dockerfile"}
SHELL_SCRIPTS = [
    *sorted((DOCKER / "entrypoints").glob("*.sh")),
    DOCKER / "postgres/backup.sh",
    *sorted((DOCKER / "postgres/initdb").glob("*.sh")),
    REPO / "scripts/deploy",
]


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        pytest.fail(f"{name} is missing: install the dev extras (make test does)")
    return found


def _final_stage(path: Path) -> list[dict[str, Any]]:
    structure: list[dict[str, Any]] = DockerfileParser(path=str(path)).structure
    starts = [index for index, item in enumerate(structure) if item["instruction"] == "FROM"]
    return structure[starts[-1] :]


def _resolve_args(value: str, stage: list[dict[str, Any]]) -> str:
    defaults = dict(
        item["value"].split("=", 1) for item in stage if item["instruction"] == "ARG" and "=" in item["value"]
    )
    return re.sub(r"\$\{(\w+)\}", lambda match: defaults.get(match.group(1), match.group(0)), value)


_GLOB = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        regex = "".join(
            _GLOB.get(token, re.escape(token)) for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
        )
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_finds_no_warning(image: str) -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(DOCKERFILES[image])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_image_is_multi_stage_non_root_and_health_checked(image: str) -> None:
    path = DOCKERFILES[image]
    assert DockerfileParser(path=str(path)).is_multistage
    stage = _final_stage(path)
    users = [_resolve_args(item["value"], stage) for item in stage if item["instruction"] == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any(item["instruction"] == "HEALTHCHECK" for item in stage)
    entrypoint = next(item["value"] for item in stage if item["instruction"] == "ENTRYPOINT")
    script = REPO / entrypoint.strip('[]"').removeprefix("/app/")
    assert script.is_file(), f"ENTRYPOINT {entrypoint} is not in the repository"
    assert script.stat().st_mode & 0o111, f"{script} is not executable"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_copied_path_exists_and_is_in_the_build_context(image: str) -> None:
    patterns = _dockerignore()
    for item in DockerfileParser(path=str(DOCKERFILES[image])).structure:
        if item["instruction"] != "COPY" or "--from=" in item["value"]:
            continue
        sources = [word for word in item["value"].split()[:-1] if not word.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
            assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = _dockerignore()
    for path in (".env", "docker/.env", ".venv/bin/python", ".git/config", "tests/conftest.py", "x.pem"):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker build"
    assert not _ignored("docker/entrypoints/api.sh", patterns)


def test_api_image_runs_cpu_torch_and_uvicorn_workers() -> None:
    dockerfile = DOCKERFILES["api"].read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in dockerfile
    entrypoint = (DOCKER / "entrypoints/api.sh").read_text()
    assert re.search(r"uvicorn api\.app:create_app --factory", entrypoint)
    assert '--workers "${SETU_WORKERS' in entrypoint
    assert "setu database upgrade --no-prompt" in entrypoint


def test_gpu_image_installs_every_third_party_module_serving_imports() -> None:
    dockerfile = DOCKERFILES["ray-gpu"].read_text()
    install = dockerfile[dockerfile.index('"vllm==') : dockerfile.index("COPY --from=build")].lower()
    # Modules that arrive with a package the image installs, rather than by name.
    brought_by = {"torch": "vllm", "numpy": "vllm", "fastapi": "ray[serve]", "pydantic": "ray[serve]"}
    imported: set[str] = set()
    for source in (REPO / "serving").rglob("*.py"):
        tree = ast.parse(source.read_text())
        optional = {id(node) for node in _optional_imports(tree)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"serving", "__future__"}
    assert {"ray", "transformers"} <= third_party
    distributions = {"yaml": "pyyaml"}
    for module in sorted(third_party):
        wanted = brought_by.get(module) or distributions.get(module) or module.replace("_", "-")
        assert f'"{wanted}' in install, f"serving imports {module}, which the GPU image does not install"


def _optional_imports(tree: ast.AST) -> list[ast.AST]:
    """Imports inside `try: ... except ImportError`: features used only when the package is there."""
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(handler.type, ast.Name) and handler.type.id in {"ImportError", "ModuleNotFoundError"}
            for handler in node.handlers
        ):
            found.extend(inner for statement in node.body for inner in ast.walk(statement))
    return found


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_script_is_shellcheck_clean(script: Path) -> None:
    result = subprocess.run([_tool("shellcheck"), str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
