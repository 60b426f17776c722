"""The API imports nothing of Ray or of the serving package; `setu serving` comes from serving/ itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETU = str(Path(sys.executable).with_name("setu"))


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_api_imports_neither_ray_nor_serving() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in imported_modules(path) if name.split(".")[0] in {"ray", "serving"}
        )
        for path in (ROOT / "api").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_setu_offers_the_serving_group_from_the_serving_package() -> None:
    result = subprocess.run([SETU, "serving", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(command in result.stdout for command in ("up", "status", "down"))
