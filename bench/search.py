"""Latency of a standards search and a memory search against a running ShikshaSetu (e.g. `make run`).

    .venv/bin/python bench/search.py [--url http://127.0.0.1:8000] [--requests 200]

Registers its own client-credentials GPT app with `setu apps create` (same environment as the service) unless
`--client-id/--client-secret` are given, stores memories and waits until they are embedded, then times
sequential calls (one in flight, so the figures are per-request latency, not throughput) and prints p50/p95.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

QUERIES = [
    "how do plants make their own food",
    "fractions and decimals for class 7",
    "French revolution",
    "probability of an event",
    "saving water",
    "electric current and circuits",
    "map reading skills",
    "algebraic expressions",
]
MEMORIES = [
    f"Student note {i}: {topic}"
    for i, topic in enumerate(
        [
            "finds fractions difficult",
            "prefers explanations in Hindi",
            "is preparing for the class 10 board exam",
            "likes cricket examples",
            "revises geography maps on Sundays",
        ]
        * 10
    )
]


def register_app() -> tuple[str, str]:
    setu = str(Path(sys.executable).with_name("setu"))
    result = subprocess.run(
        [setu, "apps", "create", "--name", "search bench", "--grant", "client_credentials", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    created = json.loads(result.stdout)
    return created["app"]["client_id"], created["client_secret"]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(client: httpx.Client, count: int, call: object) -> list[float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        response = call(i)  # type: ignore[operator]
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret")
    args = parser.parse_args()
    client_id, secret = (args.client_id, args.client_secret) if args.client_id else register_app()
    with httpx.Client(base_url=args.url, timeout=30) as client:
        token = client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "curriculum:read memories:read memories:write",
            },
            auth=(client_id, secret),
        )
        token.raise_for_status()
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        jobs = [client.post("/api/v1/memories", json={"content": text}).json()["job_id"] for text in MEMORIES]
        deadline = time.monotonic() + 120
        pending = list(jobs)
        while pending:
            if time.monotonic() > deadline:
                sys.exit("memories were not embedded within 120 s: is serving up? (GET /ready)")
            pending = [
                job for job in pending if client.get(f"/api/v1/jobs/{job}").json()["status"] != "succeeded"
            ]
            time.sleep(0.2)
        standards = timed(
            client,
            args.requests,
            lambda i: client.get("/api/v1/curriculum/standards", params={"q": QUERIES[i % len(QUERIES)]}),
        )
        mode = client.get("/api/v1/curriculum/standards", params={"q": QUERIES[0]}).json()["search_mode"]
        memories = timed(
            client,
            args.requests,
            lambda i: client.post("/api/v1/memories/search", json={"query": QUERIES[i % len(QUERIES)]}),
        )
    print(f"{'operation':<28}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for name, values in ((f"standards search ({mode})", standards), ("memory search", memories)):
        print(
            f"{name:<28}{len(values):>6}{percentile(values, 0.5):>10.1f}{percentile(values, 0.95):>10.1f}"
            f"{statistics.fmean(values):>10.1f}"
        )
    print("Note: each distinct query text is embedded once, then served from the Redis embedding cache.")


if __name__ == "__main__":
    main()
