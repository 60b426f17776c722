"""Readability figures for English text: Flesch reading ease and Flesch-Kincaid grade.

Syllables are counted with a vowel-group heuristic (good to about one syllable per word on school texts);
figures for non-Latin scripts are not computed.
"""

from __future__ import annotations

import re

import msgspec

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)|\n{2,}")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")


class Readability(msgspec.Struct):
    words: int
    sentences: int
    words_per_sentence: float
    syllables_per_word: float
    flesch_reading_ease: float
    flesch_kincaid_grade: float


def count_syllables(word: str) -> int:
    word = word.lower()
    if len(word) <= 3:
        return 1
    if word.endswith("e") and not word.endswith(("le", "ee", "ye")):
        word = word[:-1]
    return max(1, len(_VOWEL_GROUPS.findall(word)))


def readability(text: str) -> Readability | None:
    """Readability of `text`, or None when it has no English words to measure."""
    words = _WORD.findall(text)
    if not words:
        return None
    sentences = max(1, len([s for s in _SENTENCE_END.split(text.strip()) if _WORD.search(s)]))
    syllables = sum(count_syllables(w) for w in words)
    wps = len(words) / sentences
    spw = syllables / len(words)
    return Readability(
        words=len(words),
        sentences=sentences,
        words_per_sentence=round(wps, 2),
        syllables_per_word=round(spw, 2),
        flesch_reading_ease=round(206.835 - 1.015 * wps - 84.6 * spw, 1),
        flesch_kincaid_grade=round(0.39 * wps + 11.8 * spw - 15.59, 1),
    )
