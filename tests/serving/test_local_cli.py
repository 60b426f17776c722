"""`setu serving up | status | down`: a private local Ray with the CPU config, and nothing left behind.

It runs with an empty `HOME` and no Ray token settings inherited: a `ray start` that looked for
`~/.ray/auth_token` would fail at once, and one that made it would leave `HOME` non-empty."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving.local import haproxy_dir
from tests.utils.servers import free_port

SETU = str(Path(sys.executable).with_name("setu"))

pytestmark = pytest.mark.ray


def processes_under(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(directory).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_serving_up_status_down(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SERVING_URL" and not k.startswith("RAY_AUTH")}
    env.update(
        {
            "HOME": str(home),
            "SETU_DATA_DIR": str(data_dir),
            "SETU_SERVING_PORT": str(port),
            "SETU_SERVING_METRICS_PORT": str(free_port()),
        }
    )

    def setu(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SETU, "serving", *args], env=env, capture_output=True, text=True, timeout=300)

    ray_dir: Path | None = None
    try:
        up = setu("up")
        assert up.returncode == 0, up.stdout + up.stderr
        ray_dir = Path(json.loads((data_dir / "serving" / "ray.json").read_text())["temp_dir"])
        assert f"http://127.0.0.1:{port}" in up.stdout
        assert setu("up").returncode != 0  # one local Ray per data dir

        status = setu("status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        applications = report["serve"]["applications"]
        # Embeddings are their own application (one hop); the generator this offline machine cannot
        # download gets no replica, nor does a translator with no model of its own: reported, not fatal.
        assert set(applications["embeddings"]["deployments"]) == {"Embedder"}
        assert set(applications["setu"]["deployments"]) == {"Ingress"}
        for application in applications.values():
            assert all(info["status"] == "HEALTHY" for info in application["deployments"].values())
        generation = report["health"]["models"]["generation"]
        assert generation["status"] == "unavailable" and "HF_HUB_OFFLINE" in generation["reason"]
        assert report["health"]["models"]["embedding"]["status"] == "available"
        assert report["health"]["models"]["translation"]["engines"]["en-indic"] == "generator"
        embedded = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "hello"}, timeout=30)
        assert len(embedded.json()["data"][0]["embedding"]) == 384
        assert embedded.json()["usage"]["prompt_tokens"] == 3  # [CLS] hello [SEP]
        chat = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "model_unavailable"
        translated = httpx.post(
            f"http://127.0.0.1:{port}/v1/translations",
            json={"texts": ["water"], "source": "en", "target": "hi"},
            timeout=30,
        )
        assert translated.status_code == 503
        assert processes_under(ray_dir)
        assert processes_under(haproxy_dir(ray_dir))  # the HAProxy ingress (SETU_SERVING_HAPROXY, default on)
        token = data_dir / "serving" / "ray-auth-token"
        assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
    finally:
        down = setu("down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert ray_dir is not None and processes_under(ray_dir) == []
    assert processes_under(haproxy_dir(ray_dir)) == []  # Serve's HAProxy runs in a session of its own
    assert "No local Ray" in setu("down").stdout
    assert sorted(str(path.relative_to(home)) for path in home.rglob("*")) == []  # no ~/.ray, nothing
