"""`/health`, `/ready` and `/metrics`: what orchestrators and Prometheus poll."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from api.lib.observability import render_metrics
from api.lib.settings import Settings
from api.system.readiness import ReadinessCheck, degraded_components, run_checks


class SystemController(Controller):
    include_in_schema = True
    tags = ["system"]

    @get("/health", operation_id="getHealth", summary="Liveness: the process is up (no I/O).")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/ready",
        operation_id="getReadiness",
        summary="Readiness: database, redis and serving, each ok or failed with the reason.",
        responses={
            503: ResponseSpec(data_container=dict[str, Any], description="A required component failed.")
        },
    )
    async def ready(self, request: Request[Any, Any, Any], settings: Settings) -> Response[dict[str, Any]]:
        checks: list[ReadinessCheck] = request.app.state.readiness_checks
        ok, report = await run_checks(checks, settings.ready_timeout_seconds)
        body: dict[str, Any] = {"status": "ok" if ok else "failed", "components": report}
        degraded = degraded_components(checks, report)
        # Degraded: ready, but an optional part (the ML tier) is down; background work waits for it.
        body["mode"] = "degraded" if degraded else "normal"
        if degraded:
            body["degraded"] = degraded
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)

    @get("/metrics", operation_id="getMetrics", summary="Prometheus metrics.", media_type="text/plain")
    async def metrics(self) -> Response[bytes]:
        return Response(render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")
