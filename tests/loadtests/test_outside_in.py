"""The load tests, and the bench that drives the running service, reach it from outside: over HTTP and the
`setu` command, never by importing `api` (which would need its database and secrets on the load machine)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE_IN = [*sorted((ROOT / "loadtests").glob("*.py")), ROOT / "bench" / "api.py"]


def _imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


def test_load_tests_and_the_api_bench_import_nothing_from_api() -> None:
    assert len(OUTSIDE_IN) > 5
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in OUTSIDE_IN
        if (found := [m for m in _imported_modules(path) if m == "api" or m.startswith("api.")])
    }
    assert offenders == {}


def test_the_check_sees_a_nested_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from api.lib.settings import Settings\n    import api.app\n")
    assert _imported_modules(sample) == ["api.lib.settings", "api.app"]
