"""API throughput against the framework's own ceiling, in one run, at a fixed concurrency.

    python -m bench.api [--connections 32] [--duration 10]

(a) a bare Litestar JSON route (a minimal app this bench starts under uvicorn, one worker, like `setu up`),
(b) `GET /api/v1/curriculum/standards/{code}` with a bearer token (JWT check, rate limit, audit, one query),
(c) `GET /api/v1/curriculum/standards?q=...` (hybrid search; the query's embedding is cached after the first).
(b) and (c) run against a local stack started like `make loadtest` does (embedded PostgreSQL and Valkey, the
ML tier, `setu up` on a free port), or against `--host` with `--token`. The load generator is a separate
process: wrk when installed (`apt-get install -y wrk`), else an aiohttp closed loop (`python -m bench.api
load ...`). Prints requests/s, p50 and p99 for each, and the ratios (b)/(a) and (c)/(a); writes
`reports/bench/api.json`.
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
    run(url, headers, connections, 2)
    before = cpu.cpu_seconds(roots)
    result = run(url, headers, connections, seconds)
    used = cpu.used_between(before, cpu.cpu_seconds(roots))
    per_request = {name: round(1000 * value / max(result.requests, 1), 3) for name, value in used.items()}
    return Result(**{**asdict(result), "target": target, "cpu_ms_per_request": per_request})


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


def bench_local_stack(connections: int, seconds: float, serving_url: str | None) -> list[Result]:
    """All three against a local stack; (a) runs while the stack idles, so all share the same background."""
    from loadtests.setup import prepare
    from loadtests.stack import Stack

    with Stack(Path("reports/bench/stack"), serving_url=serving_url) as stack:
        data = asyncio.run(prepare(stack.settings, 1))
        token = _access_token(stack.api_url, data)
        code = data.standard_codes[len(data.standard_codes) // 2]
        bare = bench_bare(connections, seconds)
        roots = stack.process_roots()
        roots.pop("ml tier", None)  # idle here: query embeddings come from the Redis cache
        return [bare, *bench_api(stack.api_url, token, code, connections, seconds, roots)]


def print_report(results: list[Result], load_before: str) -> None:
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
    bare = by_key.get("(a)")
    if bare and bare.rps:
        for key, goal in (("(b)", 0.5), ("(c)", None)):
            other = by_key.get(key)
            if other:
                ratio = other.rps / bare.rps
                verdict = (
                    "" if goal is None else f"  (goal >= {goal:g}: {'met' if ratio >= goal else 'MISSED'})"
                )
                out.write(f"{key}/(a) throughput: {ratio:.3f}{verdict}\n")
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
    if args.host:
        if not args.token:
            parser.error("--host needs --token")
        results = [bench_bare(args.connections, args.duration)]
        results += bench_api(args.host.rstrip("/"), args.token, args.code, args.connections, args.duration)
    else:
        results = bench_local_stack(args.connections, args.duration, args.serving_url)
    print_report(results, load_before)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")


if __name__ == "__main__":
    main()
