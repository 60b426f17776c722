"""Installing prints no warnings of our own making (setuptools once warned twice per install that
`project.license` as a TOML table is deprecated)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_license_is_an_spdx_expression_and_the_build_backend_knows_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)  # PEP 639, not the deprecated table
    (requirement,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", requirement)
    assert match and int(match.group(1)) >= 77, "license expressions need setuptools 77 or later"


def test_building_the_package_prints_no_warning(tmp_path: Path) -> None:
    """The project's metadata through the same backend pip uses (this venv's setuptools, no download)."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"this venv's setuptools {setuptools.__version__} predates license expressions")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("api", "serving"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "out").mkdir()
    build = "from setuptools import build_meta; build_meta.prepare_metadata_for_build_wheel('out')"
    command = [sys.executable, "-W", "default", "-c", build]
    result = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr and "deprecated" not in result.stderr, result.stderr[-3000:]
    (metadata,) = (source / "out").glob("*.dist-info/METADATA")
    assert "License-Expression: LicenseRef-Proprietary" in metadata.read_text()
