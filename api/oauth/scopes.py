"""The scopes a token can carry, what each lets a GPT do (shown on the consent page), and scope parsing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Scope = Literal["curriculum:read", "memories:read", "memories:write", "content:generate", "admin"]

SCOPES: dict[str, str] = {
    "curriculum:read": "Search NCERT/CBSE curriculum: classes, subjects, chapters and learning outcomes",
    "memories:read": "Read the notes it saved for you",
    "memories:write": "Save and delete notes for you",
    "content:generate": "Simplify, translate and write questions for learning material",
    "admin": "Administer ShikshaSetu: users, GPT apps and their usage",
}
ADMIN_SCOPE = "admin"
DEFAULT_APP_SCOPES: list[Scope] = ["curriculum:read", "memories:read", "memories:write", "content:generate"]


def parse_scope(text: str | None) -> list[str]:
    """A space-separated scope parameter as an ordered list without repeats (unknown names kept)."""
    seen: dict[str, None] = {}
    for name in (text or "").split():
        seen.setdefault(name, None)
    return list(seen)


def canonical(scopes: Iterable[str]) -> list[str]:
    """Scopes in the order `SCOPES` lists them."""
    wanted = set(scopes)
    return [name for name in SCOPES if name in wanted]
