"""The stack a load test starts when it is given no `--host`: `setu up` (what `make run` starts: embedded
PostgreSQL and Valkey, the ML tier on a private local Ray with its own auth token, the API) on free ports
with a private data directory, driven from here over HTTP like any other deployment. Nothing here imports
`api`; the admin credential comes from `setu apps create` (the operator's command), kept owner-only in the
stack's folder and reused while it works. `setu up` runs in its own session and is stopped by its PID
(process group); it stops everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import httpx

from loadtests.service import AdminCredential, ServiceError, admin_token

RAY_WORKER_PORTS = range(10002, 20000)
SETU = str(Path(sys.executable).with_name("setu"))
READY_TIMEOUT_S = 600.0
"""`setu up` to /ready with serving ok; a first start embeds the curriculum, on a busy 2-core box."""


def free_port() -> int:
    """A free TCP port outside Ray's worker range."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RAY_WORKER_PORTS:
            return port
    raise RuntimeError("no free port outside 10002-19999")


@dataclass(frozen=True)
class StackSettings:
    """Where the stack's parts are (for tools that read its database directly, such as bench/api.py)."""

    base_url: str
    data_dir: Path
    serving_url: str | None

    @property
    def database_url(self) -> str:
        socket_dir = self.data_dir / "postgres"
        port = (socket_dir / "postmaster.pid").read_text().splitlines()[3].strip()
        return f"postgresql://postgres@/shikshasetu?host={socket_dir}&port={port}"

    @property
    def redis_url(self) -> str:
        return f"unix://{self.data_dir / 'valkey' / 'valkey.sock'}"


class Stack:
    """Starts and stops `setu up` for a local load test; use as a context manager."""

    def __init__(
        self,
        root: Path,
        *,
        api_workers: int = 1,
        serving_url: str | None = None,
        log: TextIO = sys.stderr,
    ) -> None:
        self.root = root.resolve()  # embedded servers need absolute socket paths
        self.data_dir = self.root / "data"
        self.api_workers = api_workers
        self.serving_url = serving_url
        self.log = log
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self._api: subprocess.Popen[bytes] | None = None
        self.admin: AdminCredential | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self) -> StackSettings:
        return StackSettings(self.api_url, self.data_dir, self.serving_url)

    def _environment(self, port: int, serving_port: int, metrics_port: int) -> dict[str, str]:
        drop = {"DATABASE_URL", "REDIS_URL", "SERVING_URL", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}
        environment = {k: v for k, v in os.environ.items() if k not in drop}
        environment.update(
            {
                "SETU_HOST": "127.0.0.1",
                "SETU_PORT": str(port),
                "SETU_SERVING_PORT": str(serving_port),
                "SETU_SERVING_METRICS_PORT": str(metrics_port),
                "SETU_DATA_DIR": str(self.data_dir),
                "SETU_WORKERS": str(self.api_workers),
                "SETU_LOG_LEVEL": "WARNING",
            }
        )
        if self.serving_url:
            environment["SERVING_URL"] = self.serving_url
        return environment

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        external_serving = self.serving_url is not None
        for attempt in range(3):
            self.port, serving_port = free_port(), free_port()
            environment = self._environment(self.port, serving_port, free_port())
            log_file = (self.root / "api.log").open("ab")
            process = subprocess.Popen(  # noqa: S603 (our own command)
                [SETU, "up"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,  # its own process group: stopped as one, never by name
            )
            log_file.close()
            self.processes.append(process)
            try:
                self._wait_ready(process, need_serving=not external_serving)
                self._api = process
                break
            except RuntimeError:
                if attempt == 2 or "address already in use" not in (self.root / "api.log").read_text():
                    raise
                self.processes.remove(process)
                _terminate(process, grace=60)
        if not external_serving:
            self.serving_url = f"http://127.0.0.1:{serving_port}"
        self._note(
            f"setu up on {self.api_url}, ML tier {self.serving_url} ({time.monotonic() - started:.1f} s; "
            f"log {self.root / 'api.log'})"
        )
        self.admin = self._admin_credential(environment)

    def _wait_ready(self, process: subprocess.Popen[bytes], *, need_serving: bool) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"setu up exited with {process.returncode}; see {self.root / 'api.log'}")
            try:
                ready = httpx.get(f"{self.api_url}/ready", timeout=5)
                serving = ready.json()["components"].get("serving", {}).get("status")
                if ready.status_code == 200 and (serving == "ok" or not need_serving):
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"setu up not ready after {READY_TIMEOUT_S:g} s; see {self.root / 'api.log'}")

    def _admin_credential(self, environment: dict[str, str]) -> AdminCredential:
        """An app with the `admin` scope: the one kept from an earlier run while it still works, else a new
        one from `setu apps create` (it shares the running embedded servers of the data directory)."""
        saved = self.root / "admin-app.json"
        if saved.exists():
            credential = AdminCredential(**json.loads(saved.read_text()))
            try:
                with httpx.Client(base_url=self.api_url, timeout=30) as http:
                    admin_token(http, credential)
                return credential
            except (ServiceError, httpx.HTTPError):
                saved.unlink()
        command = [SETU, "apps", "create", "--name", "Load test admin", "--scope", "admin"]
        command += ["--grant", "client_credentials", "--json"]
        created = subprocess.run(  # noqa: S603 (our own command)
            command, env=environment, capture_output=True, text=True, timeout=120, check=False
        )
        if created.returncode != 0:
            raise RuntimeError(f"setu apps create failed: {created.stderr[-2000:]}")
        body = json.loads(created.stdout)
        credential = AdminCredential(client_id=body["app"]["client_id"], client_secret=body["client_secret"])
        descriptor = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump({"client_id": credential.client_id, "client_secret": credential.client_secret}, file)
        return credential

    def process_roots(self) -> dict[str, int | None]:
        """The root PID of each part, for CPU accounting (`loadtests.cpu`; a part's tree stops where another
        part's root begins): the API (`setu up` and its uvicorn workers), PostgreSQL, Valkey, the ML tier."""
        roots: dict[str, int | None] = {"api": self._api.pid if self._api else None}
        postmaster = self.data_dir / "postgres" / "postmaster.pid"
        roots["postgres"] = int(postmaster.read_text().split()[0]) if postmaster.exists() else None
        roots["valkey"] = None
        if self._api is not None:
            for child in _children(self._api.pid):
                if "valkey" in _command(child):
                    roots["valkey"] = child
        ray_state = self.data_dir / "serving" / "ray.json"
        if ray_state.exists():
            roots["ml tier"] = int(json.loads(ray_state.read_text())["pid"])
        return roots

    def stop(self) -> None:
        """Stop `setu up` (it stops its servers and its Ray); safe to call twice."""
        while self.processes:
            _terminate(self.processes.pop(), grace=90)

    def _note(self, text: str) -> None:
        self.log.write(f"[stack] {text}\n")
        self.log.flush()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind the stack like Ctrl-C does, so `Stack.stop()` runs and nothing is left behind."""

    def raise_exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT to `setu up` (it stops what it started, as on Ctrl-C), SIGKILL to its group after `grace` s."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGINT)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass
