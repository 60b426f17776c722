"""Every operation's error answers, in the spec: status, a description and the problem-details schema.

The statuses come from what the layers of the service really do, so they hold for every route at once:
- every route: 422 (a NUL byte or lone surrogate in any input, `api/lib/cleantext.py`), 503 where a
  database or Redis sits behind the answer;
- a request body: 400 (malformed JSON or form), 413 (over the body limit), 422 (invalid fields);
- `/api/v1`: 401 (no or bad token), 403 (scope missing, app suspended), 429 (rate limit), 503;
- a path parameter: 404 (nothing with that id for this caller);
- plus each operation's own (`EXTRA`): 409 conflicts, 413 size limits, 502 unusable model output...

OAuth endpoints keep their RFC 6749 error bodies for 400/401/429 (OAuth clients parse that shape).
"""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute

from api.lib.errors import PROBLEM_JSON, ProblemDetails

API_PREFIX = "/api/v1"
# Routes that answer without a database or Redis behind them.
NO_BACKEND_PATHS = {"/health", "/metrics"}
BODY_METHODS = {"POST", "PUT", "PATCH"}
RESERVED_KWARGS = {
    "self",
    "request",
    "state",
    "scope",
    "headers",
    "cookies",
    "query",
    "socket",
    "body",
    "data",
}

DESCRIPTIONS = {
    400: "Malformed request: a body that is not valid JSON (or form data), or a malformed parameter.",
    401: "No access token, or an invalid, expired or revoked one (`WWW-Authenticate` says which).",
    403: "The token lacks the scope this operation needs, or its GPT app is suspended.",
    404: "Nothing with this identifier exists for the caller.",
    409: "Conflicts with the current state (see `detail`).",
    413: "The request body, or a text in it, is over the size limit (see `detail`).",
    422: (
        "Invalid input: `detail` and `errors` name each field (wrong type or range, or text with a NUL "
        "byte or a lone surrogate, which is refused everywhere)."
    ),
    429: "Rate limit reached for the app or the user; retry after `Retry-After` seconds.",
    502: "The model answered with output that could not be used; retrying may help.",
    503: "A dependency (database, Redis, ML tier) is restarting or unreachable; retry after `Retry-After`.",
}

# What an operation adds to the rules above.
EXTRA: dict[str, dict[int, str]] = {
    "createUser": {409: "A user with this e-mail already exists."},
    "updateUser": {409: "Administrators cannot deactivate or demote their own account."},
    "deleteUser": {409: "Administrators cannot delete their own account."},
    "listChapters": {404: "No chapters for this class and subject."},
    "createMemory": {413: "The content or metadata is over its size limit."},
    "searchStandards": {502: DESCRIPTIONS[502]},
    "searchMemories": {502: DESCRIPTIONS[502]},
    "alignToCurriculum": {502: DESCRIPTIONS[502], 413: DESCRIPTIONS[413]},
    "generateQuestions": {502: DESCRIPTIONS[502]},
    "simplifyText": {502: DESCRIPTIONS[502]},
    "translateText": {502: DESCRIPTIONS[502]},
}


def error_statuses(
    path: str, method: str, operation_id: str, *, has_path_params: bool, has_parameters: bool
) -> dict[int, str]:
    """The error statuses (with descriptions) one operation can answer, beyond what it declares itself."""
    found = {422: DESCRIPTIONS[422]}
    if path not in NO_BACKEND_PATHS:
        found[503] = DESCRIPTIONS[503]
    if has_parameters:  # Litestar's own 400 for these is not our problem-details shape: replace it
        found[400] = DESCRIPTIONS[400]
    if method in BODY_METHODS:
        found.update({400: DESCRIPTIONS[400], 413: DESCRIPTIONS[413]})
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        found.update({401: DESCRIPTIONS[401], 403: DESCRIPTIONS[403], 429: DESCRIPTIONS[429]})
    if has_path_params:
        found[404] = DESCRIPTIONS[404]
    found.update(EXTRA.get(operation_id, {}))
    return dict(sorted(found.items()))


def _has_parameters(handler: HTTPRouteHandler) -> bool:
    """Whether the handler reads a body, or a query, header or path parameter (what Litestar validates)."""
    injected = RESERVED_KWARGS | set(handler.resolve_dependencies())
    return any(name not in injected for name in handler.parsed_fn_signature.parameters) or (
        "data" in handler.parsed_fn_signature.parameters
    )


def problem_response(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ProblemDetails,
        description=description,
        media_type=PROBLEM_JSON,
        generate_examples=False,
    )


class ErrorResponsesPlugin(ReceiveRoutePlugin):
    """Adds each route's error answers to its handlers as the app registers them (before any spec exists)."""

    def receive_route(self, route: BaseRoute) -> None:
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            if not isinstance(handler, HTTPRouteHandler) or not handler.resolve_include_in_schema():
                continue
            declared = dict(handler.responses or {})
            for method in sorted(handler.http_methods):
                operation_id = handler.operation_id if isinstance(handler.operation_id, str) else ""
                statuses = error_statuses(
                    route.path,
                    method,
                    operation_id,
                    has_path_params=bool(route.path_parameters),
                    has_parameters=_has_parameters(handler),
                )
                for status, description in statuses.items():
                    declared.setdefault(status, problem_response(description))
            handler.responses = declared
