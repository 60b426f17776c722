"""The audit log: `record()` is an in-memory append (no I/O on the request path); a background task writes
batches to PostgreSQL. Records carry ids, operation names, statuses and timings, never a credential."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import Table, column, func, insert, select, update, values
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import DateTime, Uuid

from api.apps.models import GptApp
from api.audit.models import AuditEvent
from api.audit.schemas import OperationStats, UsageStats

log = structlog.get_logger("api.audit")

AUDIT_TABLE = cast(Table, AuditEvent.__table__)
"""Written with asyncpg's binary COPY (a Core insert elsewhere): a batch costs the event loop little."""

AUDIT_DROPPED = Counter(
    "setu_audit_events_dropped_total", "Audit events lost because the buffer was full or a write failed."
)
AUDIT_BUFFER = Gauge(
    "setu_audit_buffer_events", "Audit events waiting to be written.", multiprocess_mode="livesum"
)


_MARK_USED = """
UPDATE gpt_apps AS app SET last_used_at = seen.used_at
FROM unnest($1::uuid[], $2::timestamptz[]) AS seen(id, used_at)
WHERE app.id = seen.id AND (app.last_used_at IS NULL OR app.last_used_at < seen.used_at)
"""
"""Each app's `last_used_at`, from a batch (asyncpg; the same as the Core update below)."""


class AuditRecord(NamedTuple):
    """One event, in the audit table's column order (a tuple: COPY takes it as it is)."""

    occurred_at: datetime.datetime
    kind: str
    operation: str
    status: int
    latency_ms: float
    app_id: uuid.UUID | None = None
    client_id: str | None = None
    user_id: uuid.UUID | None = None
    error: str | None = None
    request_id: str | None = None


_FIELDS = AuditRecord._fields


class AuditLog:
    """A bounded buffer of audit records and the task that flushes it in batches."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        *,
        capacity: int = 20_000,
        batch_size: int = 500,
        interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._buffer: collections.deque[AuditRecord] = collections.deque()
        self._capacity = capacity
        self._batch_size = batch_size
        self._interval = interval
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._buffer)

    def record(
        self,
        kind: str,
        operation: str,
        status: int,
        latency_ms: float,
        *,
        app_id: uuid.UUID | None = None,
        client_id: str | None = None,
        user_id: uuid.UUID | None = None,
        error: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Queue one event; never blocks, never raises. A full buffer drops the event and counts it."""
        if len(self._buffer) >= self._capacity:
            AUDIT_DROPPED.inc()
            return
        self._buffer.append(
            AuditRecord(
                datetime.datetime.now(datetime.UTC),
                kind,
                operation[:100],
                status,
                round(latency_ms, 3),
                app_id,
                client_id,
                user_id,
                error,
                request_id,
            )
        )
        AUDIT_BUFFER.inc()
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> int:
        """Write what is buffered now (not what arrives meanwhile); returns how many events were written."""
        written = 0
        async with self._flush_lock:
            pending = len(self._buffer)
            while pending > 0 and self._buffer:
                count = min(len(self._buffer), self._batch_size, pending)
                pending -= count
                batch = [self._buffer.popleft() for _ in range(count)]
                AUDIT_BUFFER.dec(count)
                try:
                    await self._write(batch)
                except Exception as error:  # a failed write must not kill the flusher: keep or drop
                    self._requeue(batch)
                    log.warning("audit write failed", error=f"{type(error).__name__}: {error}", events=count)
                    break
                written += count
        return written

    async def run(self) -> None:
        """Flush every `interval` seconds, or as soon as a batch is full, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    def _requeue(self, batch: list[AuditRecord]) -> None:
        room = self._capacity - len(self._buffer)
        kept = batch[:room] if room > 0 else []
        self._buffer.extendleft(reversed(kept))
        AUDIT_BUFFER.inc(len(kept))
        if len(batch) > len(kept):
            AUDIT_DROPPED.inc(len(batch) - len(kept))

    async def _write(self, batch: list[AuditRecord]) -> None:
        last_use: dict[uuid.UUID, datetime.datetime] = {}
        for item in batch:
            if item.app_id is not None and item.status < 500:
                last_use[item.app_id] = max(item.occurred_at, last_use.get(item.app_id, item.occurred_at))
        async with self._sessions() as session, session.begin():
            connection = await session.connection()
            driver: Any = (await connection.get_raw_connection()).driver_connection
            if hasattr(driver, "copy_records_to_table"):  # asyncpg: binary COPY, no per-row SQL work
                await driver.copy_records_to_table(AUDIT_TABLE.name, records=batch, columns=_FIELDS)
                if last_use:  # a prepared statement: nothing compiled per batch
                    await driver.execute(_MARK_USED, list(last_use), list(last_use.values()))
                return
            await session.execute(insert(AUDIT_TABLE), [item._asdict() for item in batch])
            if last_use:
                seen = values(
                    column("id", Uuid()), column("used_at", DateTime(timezone=True)), name="seen"
                ).data(list(last_use.items()))
                await session.execute(
                    update(GptApp)
                    .where(GptApp.id == seen.c.id)
                    .where((GptApp.last_used_at.is_(None)) | (GptApp.last_used_at < seen.c.used_at))
                    .values(last_used_at=seen.c.used_at)
                    .execution_options(synchronize_session=False)
                )


MAX_WINDOW_SECONDS = 3660 * 86400  # ten years


def parse_window(text: str) -> datetime.timedelta:
    """`30m`, `24h`, `7d` (or plain seconds) as a time span."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"expected a span such as 30m, 24h or 7d, got {text!r}") from None
    if not amount > 0:  # NaN too
        raise ValueError(f"expected a positive span, got {text!r}")
    if amount * units[unit] > MAX_WINDOW_SECONDS:  # beyond it, date arithmetic overflows (a 500)
        raise ValueError(f"expected a span of at most {MAX_WINDOW_SECONDS // 86400}d, got {text!r}")
    return datetime.timedelta(seconds=amount * units[unit])


async def usage_stats(session: AsyncSession, app_id: uuid.UUID, window: datetime.timedelta) -> UsageStats:
    """Calls by operation, error rate, p50/p95 latency and last use of one app over the last `window`."""
    since = datetime.datetime.now(datetime.UTC) - window
    failed = func.count().filter(AuditEvent.status >= 400)
    rows = (
        await session.execute(
            select(
                AuditEvent.operation,
                func.count().label("calls"),
                failed.label("errors"),
                func.percentile_cont(0.5).within_group(AuditEvent.latency_ms).label("p50"),
                func.percentile_cont(0.95).within_group(AuditEvent.latency_ms).label("p95"),
                func.max(AuditEvent.occurred_at).label("last"),
            )
            .where(AuditEvent.app_id == app_id, AuditEvent.occurred_at >= since)
            .group_by(AuditEvent.operation)
            .order_by(func.count().desc(), AuditEvent.operation)
        )
    ).all()
    totals = (
        await session.execute(
            select(
                func.count(),
                failed,
                func.percentile_cont(0.5).within_group(AuditEvent.latency_ms),
                func.percentile_cont(0.95).within_group(AuditEvent.latency_ms),
            ).where(AuditEvent.app_id == app_id, AuditEvent.occurred_at >= since)
        )
    ).one()
    last_use = await session.scalar(
        select(func.max(AuditEvent.occurred_at)).where(AuditEvent.app_id == app_id)
    )
    calls, errors = int(totals[0]), int(totals[1])
    return UsageStats(
        app_id=app_id,
        since=since,
        calls=calls,
        errors=errors,
        error_rate=round(errors / calls, 4) if calls else 0.0,
        p50_ms=_ms(totals[2]),
        p95_ms=_ms(totals[3]),
        last_used_at=last_use,
        operations=[
            OperationStats(
                operation=row.operation,
                calls=row.calls,
                errors=row.errors,
                error_rate=round(row.errors / row.calls, 4),
                p50_ms=_ms(row.p50),
                p95_ms=_ms(row.p95),
                last_called_at=row.last,
            )
            for row in rows
        ],
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)
