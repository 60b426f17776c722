"""The GPT Actions schema: only the operations a Custom GPT calls, within every limit the GPT editor enforces.

Limits (OpenAI GPT Actions docs): an absolute https server URL, at most 30 operations, summaries and
descriptions of at most 300 characters, parameter descriptions of at most 700, unique operation ids,
`x-openai-isConsequential` on every operation that is not a GET, OAuth through the authorization-code flow.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec
from litestar import Litestar

from api.oauth.guards import scope_of
from api.oauth.scopes import SCOPES

GPT_PATH_PREFIX = "/api/v1/"
EXCLUDED_PREFIXES = ("/api/v1/admin",)
MAX_OPERATIONS = 30
MAX_SUMMARY = 300
MAX_PARAMETER_DESCRIPTION = 700
OPERATION_ID = re.compile(r"^[a-z][A-Za-z0-9]{0,63}$")
# Operations that change or remove what a user keeps ask ChatGPT to confirm every time.
CONSEQUENTIAL_METHODS = {"delete"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


class GptSchemaError(ValueError):
    """The schema would be refused by the GPT editor; the message says why."""


def _is_gpt_path(path: str) -> bool:
    return path.startswith(GPT_PATH_PREFIX) and not path.startswith(EXCLUDED_PREFIXES)


def _referenced_schemas(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _referenced_schemas(value, found)
    elif isinstance(node, list):
        for value in node:
            _referenced_schemas(value, found)


def build_gpt_schema(app: Litestar, server_url: str) -> dict[str, Any]:
    """The GPT Actions document for a deployment reachable at `server_url` (https, absolute)."""
    if not server_url.startswith("https://"):
        raise GptSchemaError(f"GPT Actions need an absolute https server URL, got {server_url!r}")
    server_url = server_url.rstrip("/")
    full: dict[str, Any] = msgspec.to_builtins(app.openapi_schema.to_schema())
    scopes = _scopes_by_operation(app)
    paths: dict[str, Any] = {}
    for path, item in full["paths"].items():
        if not _is_gpt_path(path):
            continue
        kept = {}
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            operation = copy.deepcopy(operation)
            operation.pop("description", None)  # the summary says it, within the limit
            operation.pop("deprecated", None)
            if method != "get":
                operation["x-openai-isConsequential"] = method in CONSEQUENTIAL_METHODS
            scope = scopes.get(operation.get("operationId", ""))
            if scope:  # any one of the listed scopes opens the operation
                operation["security"] = [{"oauth2": [name]} for name in scope.split()]
            kept[method] = operation
        if kept:
            paths[path] = kept
    schemas: dict[str, Any] = full.get("components", {}).get("schemas", {})
    needed: set[str] = set()
    _referenced_schemas(paths, needed)
    while True:  # schemas that reference other schemas
        before = len(needed)
        _referenced_schemas([schemas[name] for name in needed if name in schemas], needed)
        if len(needed) == before:
            break
    document: dict[str, Any] = {
        "openapi": full["openapi"],
        "info": {
            "title": "ShikshaSetu for Custom GPTs",
            "version": full["info"]["version"],
            "description": (
                "NCERT/CBSE curriculum search, a per-student memory bank and classroom content tools "
                "(simplify, translate, questions, curriculum alignment) for Indian schools."
            ),
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": {name: schemas[name] for name in sorted(needed) if name in schemas},
            "securitySchemes": {
                "oauth2": {
                    "type": "oauth2",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": f"{server_url}/oauth/authorize",
                            "tokenUrl": f"{server_url}/oauth/token",
                            "refreshUrl": f"{server_url}/oauth/token",
                            "scopes": {name: text for name, text in SCOPES.items() if name != "admin"},
                        }
                    },
                }
            },
        },
        "security": [{"oauth2": [name for name in SCOPES if name != "admin"]}],
    }
    check_gpt_limits(document)
    return document


def _scopes_by_operation(app: Litestar) -> dict[str, str]:
    """Each operation's required scope, read from its guard (so it holds before the app has started)."""
    found: dict[str, str] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            scope = scope_of(handler)
            if scope and isinstance(handler.operation_id, str):
                found[handler.operation_id] = scope
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def check_gpt_limits(document: dict[str, Any]) -> None:
    """Raise GptSchemaError naming every limit the document breaks."""
    problems: list[str] = []
    server = document.get("servers", [{}])[0].get("url", "")
    if not server.startswith("https://"):
        problems.append(f"server URL {server!r} is not absolute https")
    ops = operations(document)
    if len(ops) > MAX_OPERATIONS:
        problems.append(f"{len(ops)} operations; the GPT editor accepts at most {MAX_OPERATIONS}")
    seen: set[str] = set()
    for path, method, operation in ops:
        where = f"{method.upper()} {path}"
        operation_id = operation.get("operationId", "")
        if not OPERATION_ID.match(operation_id):
            problems.append(f"{where}: operationId {operation_id!r} is not verb-first camelCase")
        if operation_id in seen:
            problems.append(f"{where}: operationId {operation_id!r} is used twice")
        seen.add(operation_id)
        for field in ("summary", "description"):
            text = operation.get(field) or ""
            if len(text) > MAX_SUMMARY:
                problems.append(f"{where}: {field} has {len(text)} characters (max {MAX_SUMMARY})")
        if not operation.get("summary"):
            problems.append(f"{where}: no summary")
        for parameter in operation.get("parameters", []):
            text = parameter.get("description") or ""
            if len(text) > MAX_PARAMETER_DESCRIPTION:
                problems.append(f"{where}: parameter {parameter.get('name')} description is too long")
        if method != "get" and "x-openai-isConsequential" not in operation:
            problems.append(f"{where}: no x-openai-isConsequential")
    if problems:
        raise GptSchemaError("; ".join(problems))


def render(document: dict[str, Any]) -> str:
    return msgspec.json.format(msgspec.json.encode(document), indent=2).decode() + "\n"
