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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Reference, RequestBody, Schema
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute
from litestar.typing import FieldDefinition

from api.lib.errors import PROBLEM_JSON, ProblemDetails

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

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
    "generateQuestions": {502: DESCRIPTIONS[502], 404: "No learning outcome or chapter has this `code`."},
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
        _answer_options_for(route)
        for handler in route.route_handlers:
            if isinstance(handler.operation_id, str) and handler.operation_id in FORM_OPERATIONS:
                handler.operation_class = FORM_OPERATIONS[handler.operation_id]
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
            if handler.operation_id == "revokeToken":  # RFC 7009: 200 with an empty body
                declared[200] = ResponseSpec(
                    data_container=None,
                    description="Revoked, or not a valid token: either way an empty body.",
                )
            handler.responses = declared


def _answer_options_for(route: HTTPRoute) -> None:
    """Litestar merges the handlers of a path registered twice (GET and POST of one controller) into a new
    route but keeps the first route's automatic OPTIONS handler, whose `Allow` then lists only the first
    route's methods. Point that handler at the merged route, so `Allow` lists every method of the path."""
    for handler in route.route_handlers:
        function = getattr(handler.fn, "__wrapped__", handler.fn)
        if handler.http_methods != {"OPTIONS"} or getattr(function, "__name__", "") != "options_handler":
            continue
        for cell in getattr(function, "__closure__", None) or ():
            if isinstance(cell.cell_contents, HTTPRoute) and cell.cell_contents is not route:
                cell.cell_contents = route


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's schema of a msgspec Struct, plus what it leaves out and the server enforces:
    `additionalProperties: false` for `forbid_unknown_fields` structs, and the length and pattern
    constraints of list items (`list[Annotated[str, Meta(min_length=1)]]`)."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if not isinstance(info, msgspec.inspect.StructType):
            return schema
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            prop = (schema.properties or {}).get(field.encode_name)
            item = _list_item(field.type)
            if isinstance(prop, Schema) and isinstance(prop.items, Schema) and item is not None:
                _constrain(prop.items, item)
        return schema


def _list_item(kind: Any) -> Any:
    while isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if isinstance(kind, msgspec.inspect.UnionType):  # `list[...] | None`
        kinds = [k for k in kind.types if not isinstance(k, msgspec.inspect.NoneType)]
        kind = kinds[0] if len(kinds) == 1 else None
    while isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if isinstance(kind, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.FrozenSetType)):
        return kind.item_type
    return None


def _constrain(schema: Schema, item: Any) -> None:
    while isinstance(item, msgspec.inspect.Metadata):
        item = item.type
    if isinstance(item, msgspec.inspect.StrType):
        if item.min_length is not None:
            schema.min_length = item.min_length
        if item.max_length is not None:
            schema.max_length = item.max_length
        if item.pattern is not None:
            schema.pattern = item.pattern


def _form(required: list[str], **fields: Schema) -> Schema:
    properties: dict[str, Schema | Reference] = dict(fields)
    return Schema(type=OpenAPIType.OBJECT, properties=properties, required=required)


_TEXT = Schema(type=OpenAPIType.STRING)
_CLIENT = {"client_id": _TEXT, "client_secret": _TEXT}  # or HTTP Basic (RFC 6749 section 2.3.1)
# RFC 7009 section 2.1: a hint the server does not know is ignored, not refused.
_HINT = Schema(
    type=OpenAPIType.STRING, description="`access_token` or `refresh_token`; other values are ignored."
)
# The OAuth endpoints read their form themselves (`read_form`), so Litestar cannot describe it.
FORMS = {
    "issueToken": _form(
        ["grant_type"],
        grant_type=Schema(
            type=OpenAPIType.STRING, enum=["authorization_code", "refresh_token", "client_credentials"]
        ),
        code=_TEXT,
        redirect_uri=_TEXT,
        code_verifier=_TEXT,
        refresh_token=_TEXT,
        scope=Schema(type=OpenAPIType.STRING, description="Space-separated scopes."),
        **_CLIENT,
    ),
    "revokeToken": _form(
        ["token"],
        token=_TEXT,
        token_type_hint=_HINT,
        **_CLIENT,
    ),
    "introspectToken": _form(
        ["token"],
        token=_TEXT,
        token_type_hint=_HINT,
        **_CLIENT,
    ),
}


def _form_operation(form: Schema) -> type[Operation]:
    @dataclass
    class FormOperation(Operation):
        """An operation whose `application/x-www-form-urlencoded` body is documented here."""

        def __post_init__(self) -> None:
            if self.request_body is None:
                content = {"application/x-www-form-urlencoded": OpenAPIMediaType(schema=form)}
                self.request_body = RequestBody(content=content, required=True)

    return FormOperation


FORM_OPERATIONS = {operation_id: _form_operation(form) for operation_id, form in FORMS.items()}
