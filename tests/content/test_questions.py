"""What the question validator accepts and refuses (a schema alone cannot check these)."""

from __future__ import annotations

import json

import pytest

from api.content.schemas import QuestionsRequest
from api.content.services import question_schema, validate_questions
from api.lib.errors import UpstreamBadOutput
from serving.generation import schema_violation


def _request(**kw: object) -> QuestionsRequest:
    return QuestionsRequest(class_level=6, text="Plants make food by photosynthesis.", **kw)  # type: ignore[arg-type]


GOOD = {
    "questions": [
        {
            "type": "mcq",
            "question": "What do plants make by photosynthesis?",
            "options": ["Food", "Rocks", "Metal", "Glass"],
            "answer": "Food",
            "explanation": "The text says so.",
        },
        {"type": "true_false", "question": "Plants make food.", "answer": "True"},
    ]
}


def test_valid_questions_pass_and_match_the_schema_sent_to_the_model() -> None:
    request = _request(count=2, types=["mcq", "true_false"])
    assert schema_violation(json.dumps(GOOD), question_schema(2, ["mcq", "true_false"])) is None
    questions = validate_questions(json.dumps(GOOD), request)
    assert [q.type for q in questions] == ["mcq", "true_false"]
    assert questions[1].options is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"answer": "Sunlight"}, "answer among options"),
        ({"options": ["Food"]}, "answer among options"),
        ({"type": "short_answer"}, "was not requested"),
    ],
)
def test_an_mcq_whose_answer_is_not_an_option_is_refused(change: dict[str, object], reason: str) -> None:
    broken = {"questions": [{**GOOD["questions"][0], **change}]}
    with pytest.raises(UpstreamBadOutput, match=reason):
        validate_questions(json.dumps(broken), _request(count=1, types=["mcq"]))


def test_too_few_or_malformed_questions_are_refused() -> None:
    with pytest.raises(UpstreamBadOutput, match="1 of 3"):
        validate_questions(json.dumps({"questions": GOOD["questions"][:1]}), _request(count=3, types=["mcq"]))
    with pytest.raises(UpstreamBadOutput, match="schema"):
        validate_questions("not json at all", _request(count=1))
    with pytest.raises(UpstreamBadOutput, match="true/false"):
        validate_questions(
            json.dumps({"questions": [{"type": "true_false", "question": "q", "answer": "maybe"}]}),
            _request(count=1, types=["true_false"]),
        )


def test_language_codes_match_the_serving_tier() -> None:
    from typing import get_args

    from api.content.schemas import LanguageCode
    from serving.languages import LANGUAGES

    assert set(get_args(LanguageCode)) == set(LANGUAGES)
