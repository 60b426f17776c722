"""Content tools over the serving tier's generator, translator and embedder."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from api.content import schemas
from api.content.readability import readability
from api.curriculum import services as curriculum
from api.lib.errors import InvalidInput, PayloadTooLarge, UpstreamBadOutput
from api.lib.settings import Settings


class ChatResult(Protocol):
    text: str
    model: str


class ContentModels(Protocol):
    """The part of the serving client the content tools use."""

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = ...,
        temperature: float = ...,
        stop: list[str] | None = ...,
        json_schema: dict[str, Any] | None = ...,
    ) -> Any: ...

    async def translate(self, texts: list[str], *, source: str, target: str) -> list[str]: ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


def check_length(text: str, settings: Settings, field: str = "text") -> None:
    if len(text) > settings.content_max_chars:
        raise PayloadTooLarge(
            f"{field} is {len(text)} characters; at most {settings.content_max_chars} are accepted"
        )


def _simplify_prompt(class_level: int) -> str:
    return (
        "You rewrite school texts for Indian students. Rewrite the user's text so that a class "
        f"{class_level} student (about {class_level + 5} years old) can read it easily: short sentences, "
        "common words, every fact kept, no new facts, no commentary. Answer with the rewritten text only."
    )


async def simplify(
    models: ContentModels, request: schemas.SimplifyRequest, settings: Settings
) -> schemas.SimplifyResult:
    check_length(request.text, settings)
    result = await models.chat(
        [
            {"role": "system", "content": _simplify_prompt(request.class_level)},
            {"role": "user", "content": request.text},
        ],
        max_tokens=min(1024, max(64, len(request.text) // 3)),
        temperature=0.2,
    )
    simplified = result.text.strip()
    if not simplified:
        raise UpstreamBadOutput("the model returned an empty text; try again")
    after = readability(simplified)
    if request.language != "en":
        simplified = (await models.translate([simplified], source="en", target=request.language))[0]
    return schemas.SimplifyResult(
        text=simplified,
        class_level=request.class_level,
        language=request.language,
        readability_before=readability(request.text),
        readability_after=after,
        model=result.model,
    )


async def translate(
    models: ContentModels, request: schemas.TranslateRequest, settings: Settings
) -> schemas.TranslateResult:
    check_length(request.text, settings)
    if request.source == request.target:
        raise InvalidInput("source and target are the same language")
    translated = (await models.translate([request.text], source=request.source, target=request.target))[0]
    return schemas.TranslateResult(text=translated, source=request.source, target=request.target)


def question_schema(count: int, types: list[str]) -> dict[str, Any]:
    """The JSON schema the generator is constrained to (and the answer is validated against)."""
    return {
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "minItems": count,
                "maxItems": count,
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "enum": sorted(set(types))},
                        "question": {"type": "string", "minLength": 1},
                        "options": {
                            "type": "array",
                            "items": {"type": "string"},
                            "minItems": 2,
                            "maxItems": 5,
                        },
                        "answer": {"type": "string", "minLength": 1},
                        "explanation": {"type": "string"},
                    },
                    "required": ["type", "question", "answer"],
                },
            }
        },
        "required": ["questions"],
    }


def validate_questions(raw: str, request: schemas.QuestionsRequest) -> list[schemas.Question]:
    """Decode the model's JSON; check what a schema cannot (MCQ answer among options, true/false)."""
    try:
        parsed = msgspec.json.decode(raw.strip(), type=schemas.QuestionSet)
    except msgspec.DecodeError as error:
        raise UpstreamBadOutput(f"the model's questions do not match the schema: {error}") from None
    questions = parsed.questions[: request.count]
    if len(questions) < request.count:
        raise UpstreamBadOutput(f"the model returned {len(questions)} of {request.count} questions")
    for number, question in enumerate(questions, start=1):
        if question.type not in request.types:
            raise UpstreamBadOutput(f"question {number} has type {question.type!r}, which was not requested")
        if question.type == "mcq":
            if not question.options or len(question.options) < 2 or question.answer not in question.options:
                raise UpstreamBadOutput(
                    f"question {number} is a multiple-choice question without its answer among options"
                )
        elif question.type == "true_false":
            if question.answer.strip().lower() not in {"true", "false"}:
                raise UpstreamBadOutput(
                    f"question {number} is true/false but its answer is {question.answer!r}"
                )
            question.options = None
        else:
            question.options = None
    return questions


def _questions_prompt(request: schemas.QuestionsRequest) -> str:
    kinds = ", ".join(
        {
            "mcq": "multiple choice (4 options, answer = the correct option's text)",
            "short_answer": "short answer",
            "true_false": "true/false (answer 'true' or 'false')",
        }[t]
        for t in request.types
    )
    return (
        f"You write assessment questions for Indian class {request.class_level} students. Write exactly "
        f"{request.count} questions of these kinds: {kinds}. Base every question only on the user's text and "
        "include the correct answer and a one-line explanation. Answer with JSON only, shaped as "
        '{"questions": [{"type": ..., "question": ..., "options": [...], "answer": ..., '
        '"explanation": ...}]}.'
    )


async def generate_questions(
    models: ContentModels, session: AsyncSession, request: schemas.QuestionsRequest, settings: Settings
) -> schemas.QuestionsResult:
    if (request.text is None) == (request.code is None):
        raise InvalidInput("give exactly one of `text` or `code`")
    source = request.text
    if request.code is not None:
        standard = await curriculum.get_standard(session, request.code)
        source = f"{standard.subject}, class {standard.class_level}: {standard.text}"
    assert source is not None
    check_length(source, settings)
    messages = [
        {"role": "system", "content": _questions_prompt(request)},
        {"role": "user", "content": source},
    ]
    schema = question_schema(request.count, list(request.types))
    last_error: UpstreamBadOutput | None = None
    for _ in range(2):  # one retry: sampling may fix an answer missing from its options
        result = await models.chat(
            messages, max_tokens=180 * request.count + 64, temperature=0.3, json_schema=schema
        )
        try:
            questions = validate_questions(result.text, request)
        except UpstreamBadOutput as error:
            last_error = error
            continue
        return schemas.QuestionsResult(
            questions=questions, class_level=request.class_level, model=result.model, code=request.code
        )
    assert last_error is not None
    raise last_error


async def align(
    models: ContentModels, session: AsyncSession, request: schemas.AlignRequest, settings: Settings
) -> schemas.AlignResult:
    check_length(request.text, settings)
    vector = (await models.embed([request.text]))[0]
    hits = await curriculum.align_text(
        session, vector, class_level=request.class_level, subject=request.subject, limit=request.limit
    )
    return schemas.AlignResult(items=hits)
