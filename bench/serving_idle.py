"""CPU of the local ML tier while no request arrives (issue 13: at most 10 % of one core over 60 s).

    flock /tmp/setu-bench.lock .venv/bin/python bench/serving_idle.py [--settle-seconds 15] [--seconds 60]

Starts the tier as `setu up` / `make run` do (serving.local.start_head on a fresh state dir and free ports,
cluster/serve-local.yaml deployed from a child process, this process's environment), lets it settle, then
reads /proc: CPU seconds (utime+stime+cutime+cstime) of the Ray head's process tree and of Serve's HAProxy
(its own session, found by serving.local.haproxy_pids). Prints the total as a share
of one core, each process's share, and the Serve replicas that run. Exits 1 above --limit-percent.
Always stops what it started, by PID (serving.local.stop_head).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a file: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from loadtests.cpu import cpu_seconds
from serving.local import (
    LOCAL_CONFIG,
    LocalRay,
    deploy_in_subprocess,
    free_port,
    haproxy_pids,
    start_head,
    stop_head,
)

SAMPLE_EVERY_S = 5.0  # a process that exits mid-window still counts up to its last sample


def process_name(cmdline: list[str]) -> str:
    """A short name: the Ray process title without the method it runs (`ServeController`,
    `ServeReplica:app:Deployment`), the binary (raylet, gcs_server, haproxy), `ray start`, or the Python
    script or module a Ray helper runs."""
    if not cmdline:
        return "?"
    if cmdline[0].startswith("ray::"):
        title = cmdline[0].removeprefix("ray::").split()[0]
        head, _, last = title.rpartition(":")
        return f"{head}:{last.split('.')[0]}" if head else last.split(".")[0]
    binary = Path(cmdline[0]).name
    if not binary.startswith("python"):
        return binary
    args = iter(cmdline[1:])
    for arg in args:
        if arg == "-m":
            return next(args, binary)
        if not arg.startswith("-"):  # the script
            parts = Path(arg).parts
            if parts[-1] == "ray":  # the `ray` command and its subcommand: `ray start`
                return f"ray {next(args, '')}".strip()
            return "/".join(parts[parts.index("ray") :]) if "ray" in parts else parts[-1]
    return binary


def our_processes(state: LocalRay) -> dict[int, str]:
    """PID -> short name of every process of our tier: the head's tree and our HAProxy."""
    found: dict[int, str] = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(state.pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                found[process.pid] = process_name(process.cmdline())
    found.update(dict.fromkeys(haproxy_pids(Path(state.temp_dir)), "haproxy"))
    return found


def measure(state: LocalRay, seconds: float) -> tuple[float, dict[int, tuple[str, float]], set[int]]:
    """Wall seconds, PID -> (name, CPU seconds used in the window), and PIDs that exited meanwhile."""
    names = our_processes(state)
    first = cpu_seconds({str(pid): pid for pid in names})
    last = dict(first)
    start = time.monotonic()
    deadline = start + seconds
    while (now := time.monotonic()) < deadline:
        time.sleep(min(SAMPLE_EVERY_S, deadline - now))
        current = our_processes(state)
        names.update(current)
        last.update(cpu_seconds({str(pid): pid for pid in current}))
    wall = time.monotonic() - start
    alive = our_processes(state)
    used = {
        pid: (name, last.get(str(pid), 0.0) - first.get(str(pid), 0.0))
        for pid, name in names.items()
        if str(pid) in last
    }
    return wall, used, set(names) - set(alive)


def report(wall: float, used: dict[int, tuple[str, float]], exited: set[int], limit: float) -> bool:
    """Print the figures; True when the total is within `limit` percent of one core."""
    total = 100 * sum(cpu for _, cpu in used.values()) / wall
    print(f"\nIdle CPU of the local ML tier over {wall:.0f} s: {total:.1f} % of one core (limit {limit:g} %)")
    print(f"  {'pid':>7}  {'% core':>6}  {'CPU s':>6}  process")
    for pid, (name, cpu) in sorted(used.items(), key=lambda item: -item[1][1]):
        note = "  (exited during the window)" if pid in exited else ""
        print(f"  {pid:>7}  {100 * cpu / wall:6.2f}  {cpu:6.2f}  {name}{note}")
    replicas = sorted(name for pid, (name, _) in used.items() if name.startswith("ServeReplica:"))
    print(f"Serve replicas ({len(replicas)}): {', '.join(replicas) or 'none'}")
    return total <= limit


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settle-seconds", type=float, default=15)
    parser.add_argument("--seconds", type=float, default=60, help="length of the measured window")
    parser.add_argument("--limit-percent", type=float, default=10, help="of one core; exit 1 above it")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_system_exit)  # unwind to `finally`, like Ctrl-C

    state_dir = Path(tempfile.mkdtemp(prefix="setu-idle-"))
    deployer: subprocess.Popen[bytes] | None = None
    try:
        state = start_head(state_dir, http_port=free_port(), metrics_port=free_port())
        print(f"Ray head PID {state.pid} at {state.address}; deploying {LOCAL_CONFIG.name}", flush=True)
        deployer = deploy_in_subprocess(state, state_dir, LOCAL_CONFIG)
        if deployer.wait(timeout=660) != 0:
            log = state_dir / "serve-deploy.log"
            print(f"deploy exited with {deployer.returncode}:\n{log.read_text(errors='replace')}")
            return 2
        print(f"deployed; settling {args.settle_seconds:g} s, then measuring {args.seconds:g} s", flush=True)
        time.sleep(args.settle_seconds)
        wall, used, exited = measure(state, args.seconds)
        return 0 if report(wall, used, exited, args.limit_percent) else 1
    finally:
        if deployer is not None and deployer.poll() is None:
            deployer.terminate()
            deployer.wait(timeout=10)
        stop_head(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
