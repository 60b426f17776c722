"""A private Ray head on this machine running the Serve app: what `setu serving up` and `make run` start.

Ray runs as `ray start --head --block` in its own process group, with its temp dir under our data dir and
ports outside Ray's worker range, so it never meets anyone else's Ray. It is stopped through the PID we
started (never `ray stop`, which would stop every Ray on the machine).

`python -m serving.local deploy --address A --config C --http-port P` deploys a config from a separate
process, so the API process never becomes a Ray driver.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOCAL_CONFIG = Path(__file__).resolve().parent.parent / "cluster" / "serve-local.yaml"
_RAY_WORKER_PORTS = range(10002, 20000)
_MAX_TEMP_DIR_LENGTH = 40
# Our head and our drivers agree on token auth (the token lives in ~/.ray/auth_token, made on first start).
# Ray reads the mode when it is first imported: drivers set it before their first `import ray`.
_TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}
# One node, nothing to migrate: drain briefly on SIGTERM (Ray's default waits up to 30 s).
_QUICK_DRAIN = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "3"}


def free_port() -> int:
    """A free TCP port outside Ray's worker range."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _RAY_WORKER_PORTS:
            return port
    raise RuntimeError("no free port outside 10002-19999")


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalRay:
    """What we started, as written to `<state_dir>/ray.json` (read back by `status` and `down`)."""

    pid: int
    address: str
    temp_dir: str
    http_url: str
    metrics_url: str


def _state_file(state_dir: Path) -> Path:
    return state_dir / "ray.json"


def read_state(state_dir: Path) -> LocalRay | None:
    try:
        return LocalRay(**json.loads(_state_file(state_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _ours(state: LocalRay) -> bool:
    """The recorded PID is alive and is still our `ray start` (its command line names our temp dir)."""
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        try:
            os.kill(state.pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the PID we recorded
    return state.temp_dir in cmdline


def _temp_dir_for(state_dir: Path) -> Path:
    """`<state_dir>/ray`, or a short private dir when that is too long for Ray's unix sockets (107 bytes, and
    Ray appends about 65 to the temp dir)."""
    preferred = state_dir / "ray"
    if len(str(preferred)) <= _MAX_TEMP_DIR_LENGTH:
        return preferred
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"setu-ray-{digest}"


def start_head(
    state_dir: Path, *, http_port: int, metrics_port: int, num_cpus: int | None = None
) -> LocalRay:
    """Start `ray start --head --block` in the background; return once its GCS answers."""
    existing = read_state(state_dir)
    if existing is not None and _ours(existing):
        raise RuntimeError(f"a local Ray from {state_dir} is already running (PID {existing.pid})")
    for port, what in ((http_port, "SETU_SERVING_PORT"), (metrics_port, "SETU_SERVING_METRICS_PORT")):
        if port_in_use(port):
            raise RuntimeError(f"port {port} ({what}) is in use; choose another")
    state_dir.mkdir(parents=True, exist_ok=True)
    temp_dir = _temp_dir_for(state_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)  # sessions of an earlier run
    temp_dir.mkdir(parents=True)
    gcs_port = free_port()
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--port={gcs_port}",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={num_cpus or max(os.cpu_count() or 2, 4)}",
        "--include-dashboard=false",
        f"--metrics-export-port={metrics_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--disable-usage-stats",
    ]
    log = (state_dir / "ray-start.log").open("ab")
    process = subprocess.Popen(  # noqa: S603
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **_TOKEN_AUTH},
    )
    state = LocalRay(
        pid=process.pid,
        address="",
        temp_dir=str(temp_dir),
        http_url=f"http://127.0.0.1:{http_port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
    )
    _state_file(state_dir).write_text(json.dumps(asdict(state)))
    address_file = temp_dir / "ray_current_cluster"  # `ray start` writes it once the head is up
    deadline = time.monotonic() + 120
    while not address_file.exists() or not address_file.read_text().strip():
        if process.poll() is not None:
            log_path = state_dir / "ray-start.log"
            raise RuntimeError(f"ray start exited with {process.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            stop_head(state_dir)
            raise RuntimeError("the Ray head did not come up within 120 s")
        time.sleep(0.2)
    state.address = address_file.read_text().strip()
    _state_file(state_dir).write_text(json.dumps(asdict(state)))
    return state


def stop_head(state_dir: Path, *, timeout_s: float = 15) -> bool:
    """Stop the Ray we started: SIGTERM to its process group, SIGKILL after `timeout_s`. False if none ran."""
    state = read_state(state_dir)
    if state is None or not _ours(state):
        _state_file(state_dir).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _ours(state) and time.monotonic() < deadline:
        _reap(state.pid)
        time.sleep(0.2)
    if _ours(state):
        os.killpg(state.pid, signal.SIGKILL)
        _reap(state.pid)
    _state_file(state_dir).unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when `ray start` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def connect(address: str) -> None:
    """Join the local Ray as a driver (token auth, like the head we started). Call before importing ray."""
    os.environ.update(_TOKEN_AUTH)
    import ray

    ray.init(
        address=address,
        namespace="serve",
        log_to_driver=False,
        configure_logging=False,
    )


def deploy_config(address: str, config_path: Path, http_port: int, timeout_s: float = 600) -> dict[str, Any]:
    """Connect to `address`, deploy the config with Serve's HTTP proxy on `http_port`, wait, disconnect."""
    connect(address)
    import ray

    from serving.runtime import deploy, read_config

    try:
        config = read_config(config_path)
        config.setdefault("http_options", {}).update(host="127.0.0.1", port=http_port)
        return deploy(config, timeout_s=timeout_s)
    finally:
        ray.shutdown()


def deploy_in_subprocess(state: LocalRay, config_path: Path) -> subprocess.Popen[bytes]:
    """Run `deploy_config` in a child process (the caller stays free of Ray)."""
    port = state.http_url.rsplit(":", 1)[1]
    command = [sys.executable, "-m", "serving.local", "deploy", "--address", state.address]
    command += ["--config", str(config_path), "--http-port", port]
    log = (Path(state.temp_dir).parent / "serve-deploy.log").open("ab")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.local")
    commands = parser.add_subparsers(dest="command", required=True)
    deploy_parser = commands.add_parser("deploy", help="deploy a Serve config to a running Ray")
    deploy_parser.add_argument("--address", required=True)
    deploy_parser.add_argument("--config", type=Path, default=LOCAL_CONFIG)
    deploy_parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        report = deploy_config(args.address, args.config, args.http_port)
    except (RuntimeError, ValueError) as error:
        print(f"deploy failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
