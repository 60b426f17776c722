"""Request and response shapes of the content tools."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from api.content.readability import Readability
from api.curriculum.schemas import AlignmentHit

# English plus the 22 scheduled languages of India (kept equal to serving.languages.LANGUAGES by a test).
LanguageCode = Literal[
    "en", "as", "bn", "brx", "doi", "gu", "hi", "kn", "ks", "kok", "mai", "ml",
    "mni", "mr", "ne", "or", "pa", "sa", "sat", "sd", "ta", "te", "ur",
]  # fmt: skip
ClassLevel = Annotated[int, msgspec.Meta(ge=1, le=12, description="School class (grade), 1 to 12.")]
Text = Annotated[str, msgspec.Meta(min_length=1, description="The source text (plain text).")]
QuestionType = Literal["mcq", "short_answer", "true_false"]


class SimplifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    class_level: ClassLevel = msgspec.field(name="class")
    language: LanguageCode = "en"


class SimplifyResult(msgspec.Struct):
    text: str
    class_level: int = msgspec.field(name="class")
    language: str
    readability_before: Readability | None
    readability_after: Readability | None
    model: str


class TranslateRequest(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    target: LanguageCode
    source: LanguageCode = "en"


class TranslateResult(msgspec.Struct):
    text: str
    source: str
    target: str


class QuestionsRequest(msgspec.Struct, forbid_unknown_fields=True):
    class_level: ClassLevel = msgspec.field(name="class")
    text: (
        Annotated[str, msgspec.Meta(min_length=1, description="Text to ask about; or give `code`.")] | None
    ) = None
    code: (
        Annotated[
            str, msgspec.Meta(min_length=1, max_length=64, description="A learning outcome or chapter code.")
        ]
        | None
    ) = None
    count: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    types: Annotated[list[QuestionType], msgspec.Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: ["mcq"]
    )


class Question(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    type: QuestionType
    question: Annotated[str, msgspec.Meta(min_length=1)]
    answer: Annotated[str, msgspec.Meta(min_length=1)]
    options: list[str] | None = None
    explanation: str | None = None


class QuestionSet(msgspec.Struct):
    questions: list[Question]


class QuestionsResult(msgspec.Struct, omit_defaults=True):
    questions: list[Question]
    class_level: int = msgspec.field(name="class")
    model: str
    code: str | None = None


class AlignRequest(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    class_level: ClassLevel | None = msgspec.field(default=None, name="class")
    subject: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5


class AlignResult(msgspec.Struct):
    items: list[AlignmentHit]


class JobAccepted(msgspec.Struct):
    """Long work continues in the background; poll `getJob` with this id."""

    job_id: uuid.UUID
    status: Literal["queued", "running", "succeeded", "failed"]
    detail: str
