"""The stack a load test starts when it is given no `--host`: embedded PostgreSQL and Valkey, the ML tier on a
private local Ray, and `setu up` on a free port, all with a private data directory. Every process is started
here in its own session and stopped here by its PID (process group) when the run ends.

`python -m loadtests.stack serve --port P --temp-dir D` is the ML-tier child: it deploys the Serve app (the
packaged MiniLM embedder; the generator keeps its default hub model, which cannot load offline, so the run is
"without generation") and waits for SIGTERM to shut Serve and Ray down.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx

from api.lib.embedded import EmbeddedServices
from api.lib.settings import Settings

RAY_WORKER_PORTS = range(10002, 20000)


def free_port() -> int:
    """A free TCP port outside Ray's worker range."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RAY_WORKER_PORTS:
            return port
    raise RuntimeError("no free port outside 10002-19999")


def serve_config(port: int) -> dict[str, Any]:
    """The ML tier for load tests: small CPU shares so it fits beside the API on two cores."""
    small = {"num_cpus": 0.25}
    bounded = {"max_ongoing_requests": 256, "max_queued_requests": 1000, "ray_actor_options": small}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "setu",
                "route_prefix": "/",
                "import_path": "serving.app:build_app",
                "args": {},
                "deployments": [
                    {"name": "Ingress", "num_replicas": 1, **bounded},
                    {
                        "name": "Embedder",
                        "num_replicas": 1,
                        **bounded,
                        "user_config": {"max_batch_size": 32, "batch_wait_timeout_s": 0.005},
                    },
                    {"name": "Generator", "num_replicas": 1, "ray_actor_options": small},
                    {"name": "Translator", "num_replicas": 1, "ray_actor_options": small},
                ],
            }
        ],
    }


def _serve_main(port: int, temp_dir: Path) -> None:
    """The ML-tier child process (see the module docstring)."""
    import ray
    from ray import serve

    from serving.runtime import deploy

    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    os.environ.update(offline)
    stop = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        namespace="serve",
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": offline},
    )
    try:
        deploy(serve_config(port))
        sys.stdout.write(f"serving on http://127.0.0.1:{port}\n")
        sys.stdout.flush()
        while not stop:
            time.sleep(0.2)
    finally:
        try:
            serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            ray.shutdown()


class Stack:
    """Starts and stops the services of a local load test; use as a context manager."""

    def __init__(
        self,
        root: Path,
        *,
        api_workers: int = 1,
        serving_url: str | None = None,
        log: TextIO = sys.stderr,
    ) -> None:
        self.root = root.resolve()  # embedded servers need absolute socket paths
        self.api_workers = api_workers
        self.serving_url = serving_url
        self.log = log
        self.port = free_port()
        self.services = EmbeddedServices(self.root / "data")
        self.urls: dict[str, str] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._api: subprocess.Popen[bytes] | None = None
        self._serving: subprocess.Popen[bytes] | None = None
        self.ray_dir: Path | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self) -> Settings:
        """The settings the API runs with (setup uses them to reach its database and signing keys)."""
        return Settings.model_validate(
            {
                "DATABASE_URL": self.urls.get("DATABASE_URL"),
                "REDIS_URL": self.urls.get("REDIS_URL"),
                "SERVING_URL": self.serving_url,
                "host": "127.0.0.1",
                "port": self.port,
                "data_dir": self.root / "data",
            }
        )

    def _environment(self) -> dict[str, str]:
        environment = {
            **self.urls,
            "SETU_HOST": "127.0.0.1",
            "SETU_PORT": str(self.port),
            "SETU_DATA_DIR": str(self.root / "data"),
            "SETU_WORKERS": str(self.api_workers),
            "SETU_LOG_LEVEL": "WARNING",
        }
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
        self.urls = self.services.start()
        self._note(f"embedded PostgreSQL and Valkey up ({time.monotonic() - started:.1f} s)")
        if self.serving_url is None:
            self._start_serving()
        self._start_api()

    def _spawn(self, argv: list[str], log_name: str, environment: dict[str, str]) -> subprocess.Popen[bytes]:
        log_file = (self.root / log_name).open("wb")
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and modules)
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}, **environment},
            start_new_session=True,  # its own process group: stopped as one, never by name
        )
        log_file.close()
        self.processes.append(process)
        return process

    def _start_serving(self) -> None:
        started = time.monotonic()
        port = free_port()
        self.ray_dir = Path(tempfile.mkdtemp(prefix="setu-lt-ray-"))  # short: Ray's socket paths are limited
        from serving.local import AUTH_TOKEN_FILE, auth_environment, ensure_auth_token

        # Our own Ray auth token (never ~/.ray), kept with the stack's data.
        token = auth_environment(ensure_auth_token(self.root / "data" / AUTH_TOKEN_FILE), base={})
        process = self._spawn(
            [
                sys.executable,
                "-m",
                "loadtests.stack",
                "serve",
                "--port",
                str(port),
                "--temp-dir",
                str(self.ray_dir),
            ],
            "serving.log",
            token,
        )
        url = f"http://127.0.0.1:{port}"
        self._wait(process, f"{url}/health", 300, "the ML tier", "serving.log")
        self._serving = process
        self.serving_url = url
        self._note(f"ML tier on {url} ({time.monotonic() - started:.1f} s)")

    def _start_api(self) -> None:
        started = time.monotonic()
        for attempt in range(3):
            # Chosen now, not earlier: Ray takes ephemeral ports of its own while it starts.
            self.port = free_port()
            process = self._spawn(
                [sys.executable, "-c", "from api.cli import main; main()", "up"],
                "api.log",
                self._environment(),
            )
            try:
                self._wait(process, f"{self.api_url}/ready", 600, "the API", "api.log")
                self._api = process
                break
            except RuntimeError:
                if attempt == 2 or "address already in use" not in (self.root / "api.log").read_text():
                    raise
                self.processes.remove(process)
        self._note(f"API on {self.api_url} ({time.monotonic() - started:.1f} s; log {self.root / 'api.log'})")

    def _wait(self, process: subprocess.Popen[bytes], url: str, timeout: float, what: str, log: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}; see {self.root / log}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{what} not ready at {url} after {timeout:g} s; see {self.root / log}")

    def process_roots(self) -> dict[str, int | None]:
        """The root PID of each part, for CPU accounting (`loadtests.cpu`)."""
        postmaster = self.root / "data" / "postgres" / "postmaster.pid"
        roots: dict[str, int | None] = {
            "api": self._api.pid if self._api else None,
            "postgres": int(postmaster.read_text().split()[0]) if postmaster.exists() else None,
            "valkey": self.services.valkey_pid,
        }
        if self._serving is not None:
            roots["ml tier"] = self._serving.pid
        return roots

    def stop(self) -> None:
        """Stop the API, then the ML tier, then the databases; safe to call twice."""
        while self.processes:
            process = self.processes.pop()
            _terminate(process, grace=60)
        self.services.stop()
        if self.ray_dir is not None:
            shutil.rmtree(self.ray_dir, ignore_errors=True)
            self.ray_dir = None

    def _note(self, text: str) -> None:
        self.log.write(f"[stack] {text}\n")
        self.log.flush()


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind the stack like Ctrl-C does, so `Stack.stop()` runs and nothing is left behind."""

    def raise_exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the child's process group, SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.stack")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the ML tier for a load test until SIGTERM")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--temp-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    _serve_main(args.port, args.temp_dir)


if __name__ == "__main__":
    main()
