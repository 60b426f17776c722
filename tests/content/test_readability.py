"""Readability figures used to show that simplification worked."""

from __future__ import annotations

from api.content.readability import count_syllables, readability


def test_syllables_are_counted_by_vowel_groups() -> None:
    assert [count_syllables(w) for w in ("cat", "water", "photosynthesis", "make", "table")] == [
        1,
        2,
        5,
        1,
        2,
    ]


def test_simple_text_reads_easier_than_dense_text() -> None:
    simple = readability("The sun is hot. Plants use the sun. They make food.")
    dense = readability(
        "Photosynthesis is the physiological process whereby chlorophyll-containing organisms synthesise "
        "carbohydrates utilising electromagnetic radiation, atmospheric carbon dioxide and water."
    )
    assert simple is not None and dense is not None
    assert simple.sentences == 3 and dense.sentences == 1
    assert simple.flesch_reading_ease > 80 > 0 > dense.flesch_reading_ease
    assert simple.flesch_kincaid_grade < 3 < 15 < dense.flesch_kincaid_grade


def test_text_without_english_words_has_no_figures() -> None:
    assert readability("पानी बहुत ज़रूरी है।") is None
