"""A private Ray head on this machine running the Serve app: what `setu serving up` and `make run` start.

Ray runs as `ray start --head --block` in its own process group, with its temp dir under our data dir and
ports outside Ray's worker range, so it never meets anyone else's Ray. It is stopped through the PID we
started (never `ray stop`, which would stop every Ray on the machine).

`python -m serving.local deploy --address A --config C --http-port P` deploys a config from a separate
process, so the API process never becomes a Ray driver.

Token auth: the head and every driver use our own token file, `<state_dir>/ray-auth-token` (64 hex
characters, mode 0600, made once), named by `RAY_AUTH_TOKEN_PATH`. Nothing here reads or writes `~/.ray`:
a local `ray.init()` or `ray start` without a token source would make `~/.ray/auth_token` (or fail).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
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
# Our head and our drivers agree on token auth with a token file of our own (never ~/.ray/auth_token).
# Ray reads the mode and the token when first imported: drivers set them before their first `import ray`.
AUTH_TOKEN_FILE = "ray-auth-token"  # noqa: S105 (a file name)
_TOKEN_PATTERN = re.compile(r"[0-9a-f]{64}")
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


def ensure_auth_token(path: Path) -> Path:
    """The Ray auth token file at `path`, made once (64 hex characters, mode 0600) and reused after.

    Safe when several processes race: the token is written to a private file first and linked into place,
    so nobody ever reads a half-written token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, staging = tempfile.mkstemp(prefix=".ray-auth-token-", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):  # another process made it first: theirs wins
                os.link(staging, path)
        finally:
            os.unlink(staging)
    if not _TOKEN_PATTERN.fullmatch(path.read_text().strip()):
        raise RuntimeError(f"{path} does not hold a Ray auth token (64 hex characters); delete it")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


def auth_environment(token_path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) set up for our token: token mode, our token file, and
    no `RAY_AUTH_TOKEN` (which Ray would prefer over the file)."""
    environment = {k: v for k, v in (os.environ if base is None else base).items() if k != "RAY_AUTH_TOKEN"}
    environment.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)})
    return environment


def use_auth_token(token_path: Path) -> None:
    """Make this process a driver of our token (before its first `import ray`)."""
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ensure_auth_token(token_path))})


# What every Ray process of ours gets (replicas read these at start); docs/scaling.md explains each.
SERVE_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",  # one intra-op thread per replica: replicas, not threads, use the cores
    "OMP_WAIT_POLICY": "PASSIVE",  # no OpenMP spin-waiting on an idle replica
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",  # gRPC between deployments, user code on the replica's loop
    # The controller's loop (0.1 s by default) was a third of the idle tier's CPU; one node needs no haste.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "30",
    **_QUICK_DRAIN,
}
HAPROXY_ENV = "SETU_SERVING_HAPROXY"


def haproxy_dir(temp_dir: Path) -> Path:
    """Short: Ray nests a 56-character hash in it and HAProxy allows 97 for its admin socket."""
    digest = hashlib.sha256(str(temp_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"setu-hap-{digest}"


def haproxy_environment(temp_dir: Path) -> dict[str, str]:
    """Serve's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY) with its files and ports private to this Ray
    (Ray's defaults are /tmp/haproxy-serve and ports 8404/9101, shared by every Ray on the machine)."""
    directory = haproxy_dir(temp_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_NBTHREAD": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(directory / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(directory / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(directory),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(directory / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }


def serve_environment(temp_dir: Path) -> dict[str, str]:
    """SERVE_ENVIRONMENT, plus the HAProxy ingress unless SETU_SERVING_HAPROXY=0."""
    environment = dict(SERVE_ENVIRONMENT)
    if os.environ.get(HAPROXY_ENV, "1") == "1":
        environment.update(haproxy_environment(temp_dir))
    return environment


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
    token_path: str = ""  # empty in a state file from before token files: `<state_dir>/ray-auth-token`

    def auth_token_path(self, state_dir: Path) -> Path:
        return Path(self.token_path) if self.token_path else state_dir / AUTH_TOKEN_FILE


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
    token_path = ensure_auth_token(state_dir / AUTH_TOKEN_FILE)
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
        env=auth_environment(token_path, {**os.environ, **serve_environment(temp_dir)}),
    )
    state = LocalRay(
        pid=process.pid,
        address="",
        temp_dir=str(temp_dir),
        http_url=f"http://127.0.0.1:{http_port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        token_path=str(token_path),
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
    stop_haproxy(Path(state.temp_dir))
    _state_file(state_dir).unlink(missing_ok=True)
    return True


def haproxy_pids(temp_dir: Path) -> list[int]:
    """PIDs of the HAProxy of the Ray whose temp dir is `temp_dir`, found by its config path (ours alone)."""
    directory = str(haproxy_dir(temp_dir))
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if directory in cmdline and "haproxy" in cmdline:
                pids.append(int(entry.name))
    return pids


def stop_haproxy(temp_dir: Path, *, timeout_s: float = 5) -> int:
    """Stop the HAProxy of the Ray whose temp dir is `temp_dir`: Ray starts it in a session of its own, so it
    outlives `ray start`'s process group (seen: orphans holding the Serve port). Found by its config path
    (ours alone), stopped by PID; returns how many ran."""
    pids = haproxy_pids(temp_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(haproxy_dir(temp_dir), ignore_errors=True)
    return len(pids)


def _reap(pid: int) -> None:
    """Collect the exit status when `ray start` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def connect(address: str, token_path: Path) -> None:
    """Join the local Ray as a driver with the head's token file. Call before importing ray."""
    use_auth_token(token_path)
    import ray

    ray.init(
        address=address,
        namespace="serve",
        log_to_driver=False,
        configure_logging=False,
    )


def deploy_config(
    address: str, config_path: Path, http_port: int, token_path: Path, timeout_s: float = 600
) -> dict[str, Any]:
    """Connect to `address`, deploy the config with Serve's HTTP proxy on `http_port`, wait, disconnect."""
    connect(address, token_path)
    import ray

    from serving.runtime import deploy, read_config

    try:
        config = read_config(config_path)
        config.setdefault("http_options", {}).update(host="127.0.0.1", port=http_port)
        return deploy(config, timeout_s=timeout_s)
    finally:
        ray.shutdown()


def deploy_in_subprocess(state: LocalRay, state_dir: Path, config_path: Path) -> subprocess.Popen[bytes]:
    """Run `deploy_config` in a child process (the caller stays free of Ray)."""
    port = state.http_url.rsplit(":", 1)[1]
    token_path = state.auth_token_path(state_dir)
    command = [sys.executable, "-m", "serving.local", "deploy", "--address", state.address]
    command += ["--config", str(config_path), "--http-port", port, "--auth-token-path", str(token_path)]
    log = (state_dir / "serve-deploy.log").open("ab")
    return subprocess.Popen(  # noqa: S603
        command, stdout=log, stderr=subprocess.STDOUT, env=auth_environment(token_path)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.local")
    commands = parser.add_subparsers(dest="command", required=True)
    deploy_parser = commands.add_parser("deploy", help="deploy a Serve config to a running Ray")
    deploy_parser.add_argument("--address", required=True)
    deploy_parser.add_argument("--config", type=Path, default=LOCAL_CONFIG)
    deploy_parser.add_argument("--http-port", type=int, required=True)
    deploy_parser.add_argument(
        "--auth-token-path", type=Path, required=True, help="the head's Ray auth token file"
    )
    args = parser.parse_args(argv)
    try:
        report = deploy_config(args.address, args.config, args.http_port, args.auth_token_path)
    except (RuntimeError, ValueError) as error:
        print(f"deploy failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
