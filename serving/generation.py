"""What a generation engine takes and gives, and the engine-independent parts: stop sequences, JSON output."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: list[dict[str, str]]
    max_tokens: int = 512
    temperature: float = 0.2
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    json_schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class Delta:
    """A streamed piece of a completion; the last one carries the finish reason and the token counts."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine(Protocol):
    name: str
    supports_json_schema: bool
    """True when the engine constrains decoding to a JSON schema itself (vLLM structured outputs)."""

    async def complete(self, request: GenerationRequest) -> Completion: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]: ...

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """The text before the earliest stop sequence, and whether one was found."""
    cut = min((index for s in stop if s and (index := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def check_json_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError with a readable reason when `schema` is not a valid JSON Schema."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        raise ValueError(f"json_schema is not a valid JSON Schema: {error.message}") from None


def schema_violation(text: str, schema: dict[str, Any]) -> str | None:
    """None when `text` is one JSON document valid against `schema`, else why not."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg} at character {error.pos})"
    problem = next(iter(Draft202012Validator(schema).iter_errors(document)), None)
    if problem is None:
        return None
    where = "/".join(str(part) for part in problem.absolute_path) or "the document"
    return f"{where}: {problem.message}"


def extract_json(text: str) -> str:
    """The first complete JSON object or array in `text` (models like to wrap JSON in prose or fences)."""
    decoder = json.JSONDecoder()
    for index, char in enumerate(text):
        if char in "{[":
            try:
                _, end = decoder.raw_decode(text, index)
            except json.JSONDecodeError:
                continue
            return text[index:end]
    return text.strip()


def with_schema_instruction(request: GenerationRequest, previous_problem: str | None) -> GenerationRequest:
    """Ask, in words, for JSON matching the schema; used by engines that cannot constrain decoding."""
    assert request.json_schema is not None
    instruction = (
        "Answer with one JSON document only, no prose and no code fences. "
        f"It must validate against this JSON Schema: {json.dumps(request.json_schema, separators=(',', ':'))}"
    )
    if previous_problem:
        instruction += f"\nYour previous answer was rejected: {previous_problem}."
    return replace(request, messages=[{"role": "system", "content": instruction}, *request.messages])
