"""Our own Ray auth token: one file under the data directory (64 hex characters, mode 0600), made once, the
same for every process that asks, and handed to Ray through `RAY_AUTH_TOKEN_PATH` (never `~/.ray`)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from serving.local import AUTH_TOKEN_FILE, auth_environment, ensure_auth_token


def test_token_is_made_once_private_and_well_formed(tmp_path: Path) -> None:
    path = ensure_auth_token(tmp_path / "data" / AUTH_TOKEN_FILE)
    token = path.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_auth_token(path).read_text() == token  # reused, not replaced
    assert [entry.name for entry in path.parent.iterdir()] == [AUTH_TOKEN_FILE]  # no staging file left


def test_a_loosened_mode_is_tightened_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    path = ensure_auth_token(tmp_path / AUTH_TOKEN_FILE)
    path.chmod(0o644)
    ensure_auth_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("not a token")
    with pytest.raises(RuntimeError, match="64 hex"):
        ensure_auth_token(path)


def _make(path: str) -> str:
    return ensure_auth_token(Path(path)).read_text()


def test_racing_processes_agree_on_one_token(tmp_path: Path) -> None:
    path = tmp_path / AUTH_TOKEN_FILE
    with ProcessPoolExecutor(4) as pool:
        tokens = set(pool.map(_make, [str(path)] * 16))
    assert tokens == {path.read_text()}


def test_environment_names_our_file_and_drops_an_inherited_token(tmp_path: Path) -> None:
    path = tmp_path / AUTH_TOKEN_FILE
    environment = auth_environment(path, base={"RAY_AUTH_TOKEN": "someone-elses", "KEEP": "1"})
    assert environment == {"KEEP": "1", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def test_the_test_session_has_its_own_token() -> None:
    """conftest gives this process a token before any test imports ray, so the session's `ray.init()`
    never makes `~/.ray/auth_token`."""
    assert os.environ["RAY_AUTH_MODE"] == "token"
    path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert path.name == AUTH_TOKEN_FILE and not path.is_relative_to(Path.home() / ".ray")
    assert re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    assert "RAY_AUTH_TOKEN" not in os.environ


DRIVER = """
import sys, tempfile
from pathlib import Path
from tests.utils.serving import use_session_ray_token
use_session_ray_token(Path(sys.argv[1]))
import ray
ray.init(num_cpus=1, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="setu-ray-"),
         log_to_driver=False, configure_logging=False)
assert ray.get(ray.put(42)) == 42
ray.shutdown()
"""


@pytest.mark.ray
def test_a_test_sessions_local_ray_leaves_an_empty_home_empty(tmp_path: Path) -> None:
    """What the `serving_url` fixture does (token, then a local `ray.init()`), with `HOME` an empty dir:
    without our token Ray would write `~/.ray/auth_token` there."""
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(data)], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(home.rglob("*")) == []
    assert re.fullmatch(r"[0-9a-f]{64}", (data / AUTH_TOKEN_FILE).read_text())
