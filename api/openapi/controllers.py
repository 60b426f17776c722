"""`/gpt/openapi.json` (the GPT Actions schema) and `/docs` (a viewer of the full spec)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Request, Response, get

from api.lib.errors import DomainError
from api.lib.settings import Settings
from api.openapi.gpt import GptSchemaError, build_gpt_schema

REDOC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="{spec_url}"></redoc>
<script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"></script></body></html>
"""


class SchemaNotPublishable(DomainError):
    status_code = 503
    title = "GPT schema unavailable"


class ApiDocsController(Controller):
    include_in_schema = False

    @get("/gpt/openapi.json", operation_id="getGptActionsSchema", cache=60)
    async def gpt_schema(self, request: Request[Any, Any, Any], settings: Settings) -> dict[str, Any]:
        """The schema to import into the GPT editor (Actions > Import from URL)."""
        try:
            return build_gpt_schema(request.app, settings.base_url)
        except GptSchemaError as error:
            raise SchemaNotPublishable(
                f"{error}. Set SETU_PUBLIC_URL to the https address GPTs reach this service at."
            ) from None

    @get("/docs", operation_id="getApiDocs", media_type=MediaType.HTML)
    async def docs(self) -> Response[str]:
        """A ReDoc view of the full OpenAPI 3.1 spec at /schema/openapi.json."""
        page = REDOC_PAGE.format(title="ShikshaSetu API", spec_url="/schema/openapi.json")
        return Response(page, media_type=MediaType.HTML)
