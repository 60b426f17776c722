"""Quiet degraded mode: background work that waits for a dependency says so once, not every sweep.

While the ML tier is unreachable the worker cannot embed standards or memories. It keeps trying (every sweep,
every job retry) but logs one warning when the outage starts and one line when it ends, with how much work
waited and how long; `setu_worker_degraded` and `setu_worker_waiting` carry the state meanwhile.
"""

from __future__ import annotations

import time

import structlog
from prometheus_client import Gauge

log = structlog.get_logger("api.jobs")

DEGRADED = Gauge(
    "setu_worker_degraded",
    "1 while background work waits because the dependency is unreachable (degraded mode), else 0.",
    ["dependency"],
    multiprocess_mode="max",
)
WAITING = Gauge(
    "setu_worker_waiting",
    "Background items waiting for the dependency (standards, topics and memories without an embedding).",
    ["dependency"],
    multiprocess_mode="max",
)


class Outage:
    """The worker's view of one dependency: reachable, or down since when, with how much work waiting."""

    def __init__(self, dependency: str) -> None:
        self.dependency = dependency
        self.since: float | None = None
        self.reason = ""
        self.waiting = 0
        self.most_waiting = 0
        self.failed_attempts = 0
        DEGRADED.labels(dependency).set(0)

    @property
    def active(self) -> bool:
        return self.since is not None

    def down(self, reason: str, *, waiting: int | None = None, failed_attempt: bool = False) -> None:
        """The dependency could not be reached (again). Logs only when this starts an outage."""
        if waiting is not None:
            self.waiting = waiting
            self.most_waiting = max(self.most_waiting, waiting)
            WAITING.labels(self.dependency).set(waiting)
        if failed_attempt:
            self.failed_attempts += 1
        self.reason = reason
        if self.since is not None:
            return
        self.since = time.monotonic()
        DEGRADED.labels(self.dependency).set(1)
        counted = {} if waiting is None else {"waiting": waiting}
        log.warning(
            f"{self.dependency} unreachable: background work waits and is retried quietly until it is back",
            dependency=self.dependency,
            reason=reason,
            **counted,
        )

    def up(self, *, done: int = 0, waiting: int = 0) -> None:
        """The dependency answered. Logs only when this ends an outage."""
        WAITING.labels(self.dependency).set(waiting)
        if self.since is None:
            return
        log.info(
            f"{self.dependency} reachable again: waiting background work resumed",
            dependency=self.dependency,
            down_seconds=round(time.monotonic() - self.since, 1),
            waited=max(self.most_waiting, done),
            done=done,
            failed_job_attempts=self.failed_attempts,
            still_waiting=waiting,
        )
        self.since = None
        self.reason = ""
        self.most_waiting = self.failed_attempts = 0
        self.waiting = waiting
        DEGRADED.labels(self.dependency).set(0)
