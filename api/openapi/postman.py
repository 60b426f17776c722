"""A Postman v2.1 collection of the API, authorised with the OAuth 2.0 authorization-code flow."""

from __future__ import annotations

import re
from typing import Any

from api.oauth.scopes import SCOPES

POSTMAN_SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
CALLBACK = "https://oauth.pstmn.io/v1/callback"


def _url(path: str) -> dict[str, Any]:
    postman_path = re.sub(r"\{([^}:]+)(?::[^}]+)?\}", r":\1", path)
    segments = [segment for segment in postman_path.split("/") if segment]
    variables = [{"key": segment[1:], "value": ""} for segment in segments if segment.startswith(":")]
    url: dict[str, Any] = {"raw": "{{baseUrl}}" + postman_path, "host": ["{{baseUrl}}"], "path": segments}
    if variables:
        url["variable"] = variables
    return url


def build_collection(openapi: dict[str, Any], base_url: str) -> dict[str, Any]:
    """One folder per tag; each request with its JSON body example when the operation takes one."""
    folders: dict[str, list[dict[str, Any]]] = {}
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            request: dict[str, Any] = {"method": method.upper(), "header": [], "url": _url(path)}
            if "requestBody" in operation:
                request["header"].append({"key": "Content-Type", "value": "application/json"})
                request["body"] = {"mode": "raw", "raw": "{}", "options": {"raw": {"language": "json"}}}
            if not operation.get("security") and not path.startswith("/api/v1"):
                request["auth"] = {"type": "noauth"}
            tag = (operation.get("tags") or ["other"])[0]
            folders.setdefault(tag, []).append(
                {"name": operation.get("summary") or operation.get("operationId", path), "request": request}
            )
    return {
        "info": {
            "name": "ShikshaSetu API",
            "schema": POSTMAN_SCHEMA,
            "description": openapi["info"].get("title", ""),
        },
        "auth": {
            "type": "oauth2",
            "oauth2": [
                {"key": "grant_type", "value": "authorization_code", "type": "string"},
                {"key": "authUrl", "value": "{{baseUrl}}/oauth/authorize", "type": "string"},
                {"key": "accessTokenUrl", "value": "{{baseUrl}}/oauth/token", "type": "string"},
                {"key": "clientId", "value": "{{clientId}}", "type": "string"},
                {"key": "clientSecret", "value": "{{clientSecret}}", "type": "string"},
                {
                    "key": "scope",
                    "value": " ".join(name for name in SCOPES if name != "admin"),
                    "type": "string",
                },
                {"key": "redirect_uri", "value": CALLBACK, "type": "string"},
                {"key": "client_authentication", "value": "body", "type": "string"},
                {"key": "addTokenTo", "value": "header", "type": "string"},
            ],
        },
        "variable": [
            {"key": "baseUrl", "value": base_url.rstrip("/")},
            {"key": "clientId", "value": ""},
            {"key": "clientSecret", "value": ""},
        ],
        "item": [{"name": tag, "item": items} for tag, items in sorted(folders.items())],
    }
