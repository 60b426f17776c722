"""Text PostgreSQL cannot store never reaches a handler: a NUL byte or a lone surrogate is a 422.

PostgreSQL `text` cannot hold U+0000 and UTF-8 cannot encode a lone surrogate (U+D800-U+DFFF), so either
one, anywhere in a request, would otherwise surface as a 500 from the driver. `CleanTextMiddleware` checks
every request in one place before its handler runs: the path (and so every path parameter), the query
string, every header, and JSON or URL-encoded form bodies (keys and values, at any depth). The answer names
the field. The `setu` CLI applies the same check to every command's parameters (`guard_cli`).

Cost on the hot path: byte searches over the raw query string, headers and body; a body is only decoded
again when it contains a JSON `\\u` escape or a form `%00`, which clean requests rarely do.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import click
import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from api.lib.errors import problem

_BAD = re.compile("[\x00\ud800-\udfff]")
_NUL = b"\x00"
_PERCENT_NUL = b"%00"
_JSON_ESCAPE = b"\\u"
# A surrogate escape: a valid pair (kept) or a lone one (marked), for naming the field msgspec refused.
_SURROGATE_ESCAPE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)
# Bodies larger than this are not inspected here; Litestar answers 413 above its own (lower) limit.
MAX_INSPECTED_BODY = 10_000_000


def bad_text(value: str) -> str | None:
    """What is wrong with `value` ("a NUL byte", "a lone surrogate"), or None when it can be stored."""
    found = _BAD.search(value)
    if found is None:
        return None
    return (
        "a NUL byte (U+0000)" if found.group() == "\x00" else f"a lone surrogate (U+{ord(found.group()):04X})"
    )


def find_bad(value: Any, where: str = "") -> tuple[str, str] | None:
    """The first (field path, problem) in a decoded JSON value: keys and values, at any depth."""
    if isinstance(value, str):
        reason = bad_text(value)
        return (where or "body", reason) if reason else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and (reason := bad_text(key)):
                return (f"{where + '.' if where else ''}{key!r} (a key)", reason)
            if (found := find_bad(item, path)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := find_bad(item, f"{where}[{index}]")) is not None:
                return found
    return None


def _first_bad_pair(pairs: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    for name, value in pairs:
        if reason := bad_text(name):
            return (f"{name!r} (a name)", reason)
        if reason := bad_text(value):
            return (name, reason)
    return None


def check_scope(scope: Scope) -> tuple[str, str, str] | None:
    """(source, field, problem) for the path, query string and headers; None when all are clean."""
    path: str = scope.get("path", "")
    if _BAD.search(path):
        for name, value in (scope.get("path_params") or {}).items():
            if isinstance(value, str) and (reason := bad_text(value)):
                return ("path", name, reason)
        return ("path", "path", bad_text(path) or "")
    query: bytes = scope.get("query_string", b"")
    if _PERCENT_NUL in query or _NUL in query:
        found = _first_bad_pair(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        if found:
            return ("query", *found)
    for header, raw in scope.get("headers", ()):
        if _NUL in raw or _NUL in header:
            return ("header", header.decode("latin-1").replace("\x00", "\\0"), "a NUL byte (U+0000)")
    return None


def _content_type(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


def _check_body(body: bytes, content_type: bytes) -> tuple[str, str, str] | None:
    if content_type == b"application/x-www-form-urlencoded":
        if _PERCENT_NUL in body or _NUL in body:
            found = _first_bad_pair(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
            if found:
                return ("body", *found)
        return None
    # JSON can only carry a NUL or a surrogate as a `\u` escape (raw ones are malformed JSON: a 400 later).
    if _JSON_ESCAPE not in body:
        return None
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        if "surrogate" not in str(error):
            return None  # malformed JSON: the handler's own decoding answers with its 400
        # msgspec refuses a lone surrogate escape itself; mark it with a NUL to find its field.
        marked = _SURROGATE_ESCAPE.sub(lambda m: m.group() if len(m.group()) == 12 else rb"\u0000", body)
        try:
            found = find_bad(msgspec.json.decode(marked))
        except msgspec.DecodeError:
            found = None
        return ("body", found[0] if found else "body", "a lone surrogate")
    found = find_bad(decoded)
    return ("body", *found) if found else None


_DECODERS: dict[int, msgspec.json.Decoder[Any] | None] = {}


def _decoder(handler: Any) -> msgspec.json.Decoder[Any] | None:
    """A strict decoder of the handler's `data` type (None when it has none we can decode alone)."""
    key = id(handler)
    if key not in _DECODERS:
        decoder = None
        data = handler.parsed_fn_signature.parameters.get("data") if handler is not None else None
        if (
            data is not None
            and isinstance(data.annotation, type)
            and issubclass(data.annotation, msgspec.Struct)
        ):
            decoder = msgspec.json.Decoder(data.annotation, strict=True)
        _DECODERS[key] = decoder
    return _DECODERS[key]


def _check_types(scope: Scope, body: bytes) -> tuple[str, str, str] | None:
    """JSON bodies are typed strictly: `0` is not a boolean, `"5"` is not an integer (Litestar converts
    leniently, which would accept what the spec says is invalid)."""
    decoder = _decoder(scope.get("route_handler"))
    if decoder is None or not body:
        return None
    try:
        decoder.decode(body)
    except msgspec.ValidationError as error:
        text = str(error)
        if "got `float`" in text:  # JSON Schema counts 18.0 as an integer, and so do we
            try:
                msgspec.convert(_integral(msgspec.json.decode(body)), decoder.type, strict=True)
            except msgspec.ValidationError as again:
                text = str(again)
            else:
                return None
        where = text.rsplit(" - at `$", 1)[1].rstrip("`").lstrip(".") if " - at `$" in text else "body"
        return ("body", where or "body", text.split(" - at `$", 1)[0])
    except msgspec.DecodeError:
        return None  # malformed JSON: the handler's own decoding answers with its 400
    return None


def _integral(value: Any) -> Any:
    """`value` with every float that has no fractional part made an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def _is_json(content_type: bytes) -> bool:
    return content_type == b"application/json" or content_type.endswith(b"+json")


class CleanTextMiddleware:
    """Answers 422 (problem details naming the field) for a NUL byte or a lone surrogate in any input."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        found = check_scope(scope)
        if found is None and scope.get("method") in {"POST", "PUT", "PATCH", "DELETE"}:
            content_type = _content_type(scope)
            if _is_json(content_type) or content_type == b"application/x-www-form-urlencoded":
                body, complete, receive = await _buffer(receive)
                if complete:
                    found = _check_body(body, content_type)
                    if found is None and _is_json(content_type):
                        found = _check_types(scope, body)
        if found is not None:
            await _refuse(scope, receive, send, *found)
            return
        await self.app(scope, receive, send)


async def _buffer(receive: Receive) -> tuple[bytes, bool, Receive]:
    """Read the body (up to MAX_INSPECTED_BODY) and a `receive` that replays it to the app."""
    chunks: list[bytes] = []
    size = 0
    messages: list[ReceiveMessage] = []
    complete = False
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            complete = True
            break
        if size > MAX_INSPECTED_BODY:
            break

    async def replay() -> ReceiveMessage:
        if messages:
            return messages.pop(0)
        return await receive()

    return b"".join(chunks), complete, replay


async def _refuse(scope: Scope, receive: Receive, send: Send, source: str, field: str, reason: str) -> None:
    where = {"path": "path parameter", "query": "query parameter", "header": "header", "body": "field"}[
        source
    ]
    named = field if field.endswith(")") else repr(field)
    if reason.startswith("a "):  # a NUL byte, a lone surrogate
        message = f"contains {reason}, which this API does not accept in text"
        detail = f"{where} {named} {message}."
    else:  # a strict type check
        message = reason
        detail = f"{where} {named}: {message}."
    extra: dict[str, Any] = {"errors": [{"key": field, "source": source, "message": message}]}
    if scope.get("path", "").startswith("/oauth/"):  # OAuth clients read RFC 6749's fields
        extra.update(error="invalid_request", error_description=detail)
    request: Request[Any, Any, Any] = Request(scope, receive)
    response = problem(request, 422, "Invalid input", detail, **extra)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


def guard_cli(group: click.Group) -> click.Group:
    """Apply the same check to every parameter of every `setu` command (options, arguments, prompts)."""
    for command in _commands(group):
        callback = command.callback
        if callback is None or getattr(callback, "_clean_text", False):
            continue
        command.callback = _checked(callback)
    return group


def _commands(group: click.Group) -> Iterable[click.Command]:
    for command in group.commands.values():
        yield command
        if isinstance(command, click.Group):
            yield from _commands(command)


def _checked(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        for name, value in kwargs.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for item in values:
                if isinstance(item, str) and (reason := bad_text(item)):
                    raise click.BadParameter(
                        f"contains {reason}, which ShikshaSetu does not accept in text",
                        param_hint=f"'{name}'",
                    )
        return callback(*args, **kwargs)

    run._clean_text = True  # type: ignore[attr-defined]
    return run
