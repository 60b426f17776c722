"""`make loadtest`: start the stack (or target `--host`), prepare data, run locust headless, gate on the SLOs.

Against `--host` it needs only the URL and an admin credential (`--admin-client-id`/`--admin-client-secret` of
an app with the `admin` scope, or `--admin-email`/`--admin-password`; or the `SETU_LOADTEST_ADMIN_*`
variables): the data is prepared through the HTTP API. Nothing here imports `api`.

Writes locust's CSV files (`run_stats.csv`, `run_stats_history.csv`, `run_failures.csv`), its HTML report
(`report.html`), its log and the test data under `--out` (default `reports/loadtest/`, ignored by git), prints
the summary table and exits 1 naming every operation that missed its objective (2: the run itself failed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from loadtests import cpu, slo
from loadtests.service import AdminCredential, ServiceError
from loadtests.setup import add_credential_arguments, credential_from, prepare
from loadtests.stack import Stack, exit_on_sigterm

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
USER_CLASSES = ("GptUser", "OAuthUser", "ServingUser")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__.split("\n")[0])
    target = parser.add_argument_group("target")
    target.add_argument("--host", help="an API already running (default: start a local stack)")
    target.add_argument("--serving-url", help="the Serve HTTP address (ServingUser; a local stack's own)")
    target.add_argument(
        "--data", type=Path, help="test data from `python -m loadtests.setup` (default: prepared now)"
    )
    target.add_argument("--api-workers", type=int, default=1, help="uvicorn workers of the local stack")
    add_credential_arguments(parser)
    target.add_argument(
        "--fresh", action="store_true", help="delete the local stack's data directory first (a cold start)"
    )
    load = parser.add_argument_group("load")
    load.add_argument("--users", type=int, default=20, help="concurrent locust users")
    load.add_argument("--spawn-rate", type=float, help="users started per second (default: all at once)")
    load.add_argument("--duration", default="30s", help="run time, e.g. 30s, 2m")
    load.add_argument(
        "--classes",
        nargs="+",
        choices=USER_CLASSES,
        help="user classes to run (default: all; ServingUser only when a serving URL is known)",
    )
    load.add_argument(
        "--gpt-rate", type=float, default=5, help="task iterations/s per GptUser (0: no pause; goal run: 50)"
    )
    load.add_argument("--oauth-rate", type=float, default=5, help="per OAuthUser")
    load.add_argument("--serving-rate", type=float, default=10, help="per ServingUser")
    load.add_argument("--processes", type=int, default=1, help="locust processes on this machine")
    load.add_argument("--exclude-tags", nargs="+", help="skip tasks with these tags (ml: needs the ML tier)")
    output = parser.add_argument_group("output")
    output.add_argument("--slo", type=Path, default=slo.DEFAULT_SLO)
    output.add_argument("--out", type=Path, default=Path("reports/loadtest"))
    return parser.parse_args(argv)


def _load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_locust(
    args: argparse.Namespace,
    host: str,
    serving_url: str | None,
    data: Path,
    roots: dict[str, int | None] | None = None,
) -> tuple[int, dict[str, float]]:
    """Locust headless in a child process (gevent stays out of this one); returns its exit code and the CPU
    seconds each part of the stack (`roots`, plus locust itself) used meanwhile."""
    classes = args.classes or [c for c in USER_CLASSES if c != "ServingUser" or serving_url]
    if "ServingUser" in classes and not serving_url:
        raise SystemExit("ServingUser needs --serving-url when --host is given")
    prefix = args.out / "run"
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate or args.users),
        "--run-time",
        args.duration,
        "--stop-timeout",
        "10",
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--html",
        str(args.out / "report.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--logfile",
        str(args.out / "locust.log"),
    ]
    if args.processes > 1:
        argv += ["--processes", str(args.processes)]
    if args.exclude_tags:
        argv += ["--exclude-tags", *args.exclude_tags]
    argv += classes
    environment = {
        **os.environ,
        "SETU_LOADTEST_DATA": str(data),
        "SETU_LOADTEST_PROCESSES": str(args.processes),
        "SETU_LOADTEST_GPT_RATE": str(args.gpt_rate),
        "SETU_LOADTEST_OAUTH_RATE": str(args.oauth_rate),
        "SETU_LOADTEST_SERVING_RATE": str(args.serving_rate),
    }
    if serving_url:
        environment["SETU_LOADTEST_SERVING_URL"] = serving_url
    sys.stdout.write(
        f"locust: {args.users} users ({', '.join(classes)}), {args.duration}, against {host}; "
        f"load average {_load_average()}\n"
    )
    sys.stdout.flush()
    roots = dict(roots or {})
    with (args.out / "locust.out").open("wb") as console:
        before = cpu.cpu_seconds(roots)
        locust = subprocess.Popen(argv, stdout=console, stderr=subprocess.STDOUT, env=environment)  # noqa: S603
        roots["locust"] = locust.pid
        tracked = cpu.cpu_seconds({"locust": locust.pid})
        try:
            while locust.poll() is None:  # the locust tree's last reading before it exits
                tracked = cpu.cpu_seconds({"locust": locust.pid}) or tracked
                time.sleep(1)
        finally:
            if locust.poll() is None:  # we are being stopped: stop locust too (it writes its reports)
                locust.terminate()
                try:
                    locust.wait(30)
                except subprocess.TimeoutExpired:
                    locust.kill()
    after = {**cpu.cpu_seconds({k: v for k, v in roots.items() if k != "locust"}), **tracked}
    return locust.returncode, cpu.used_between(before, after)


def execute(
    args: argparse.Namespace,
    host: str,
    serving_url: str | None,
    data: Path,
    roots: dict[str, int | None] | None = None,
) -> int:
    started = time.monotonic()
    locust_code, used = run_locust(args, host, serving_url, data, roots)
    elapsed = time.monotonic() - started
    stats = args.out / "run_stats.csv"
    if not stats.exists():
        sys.stderr.write(f"locust wrote no statistics (exit {locust_code}); see {args.out / 'locust.out'}\n")
        return 2
    sys.stdout.write(
        f"\nRun finished in {elapsed:.0f} s; load average {_load_average()} on {os.cpu_count()} CPUs; "
        f"reports in {args.out}/ (report.html, run_*.csv)\n"
    )
    _, total = slo.read_stats(stats)
    sys.stdout.write(cpu.describe(used, total.requests, elapsed) + "\n\n")
    return slo.gate(stats, args.slo)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("run_*.csv"):
        old.unlink()
    slo.load_slo(args.slo)  # a broken SLO file fails now, not after the run
    data = args.data
    if args.host:
        host = args.host.rstrip("/")
        if data is None:
            data = args.out / "data.json"
            try:
                prepare_data(host, credential_from(args), args.users, data)
            except (ValueError, ServiceError, httpx.HTTPError) as error:
                sys.stderr.write(f"loadtests: cannot prepare test data on {host}: {error}\n")
                raise SystemExit(2) from None
        raise SystemExit(execute(args, host, args.serving_url, data))
    stack_root = args.out / "stack"
    if args.fresh and stack_root.exists():
        shutil.rmtree(stack_root)
    with Stack(stack_root, api_workers=args.api_workers, serving_url=args.serving_url) as stack:
        if data is None:
            data = args.out / "data.json"
            assert stack.admin is not None
            prepare_data(stack.api_url, stack.admin, args.users, data)
        code = execute(args, stack.api_url, stack.serving_url, data, stack.process_roots())
    raise SystemExit(code)


def prepare_data(host: str, credential: AdminCredential, users: int, path: Path) -> None:
    """Test data through the service's HTTP API (`loadtests.setup`)."""
    started = time.monotonic()
    data = prepare(host, credential, users)
    data.write(path)
    sys.stdout.write(
        f"test data: app {data.client_id}, {len(data.users)} users ({time.monotonic() - started:.1f} s)\n"
    )


if __name__ == "__main__":
    main()
