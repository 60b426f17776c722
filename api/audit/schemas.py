"""Usage statistics built from the audit trail."""

from __future__ import annotations

import datetime
import uuid

import msgspec


class OperationStats(msgspec.Struct):
    operation: str
    calls: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    last_called_at: datetime.datetime | None


class UsageStats(msgspec.Struct):
    app_id: uuid.UUID
    since: datetime.datetime
    calls: int
    errors: int
    """Calls answered with a status of 400 or more."""
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    last_used_at: datetime.datetime | None
    """The last recorded call or token decision, whatever the window."""
    operations: list[OperationStats]
