"""Request and response shapes of the memory bank."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\w:\-. ]+$")]
Tags = Annotated[
    list[Tag], msgspec.Meta(max_length=20, description="Labels to group memories, e.g. 'grade-7'.")
]


class MemoryCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Something to remember for the signed-in user; embedded in the background."""

    content: Annotated[str, msgspec.Meta(min_length=1, description="What to remember (plain text).")]
    tags: Tags = msgspec.field(default_factory=list)
    metadata: Annotated[
        dict[str, Any],
        msgspec.Meta(description="Small JSON object stored as given (at most 4 KB serialised)."),
    ] = msgspec.field(default_factory=dict)


class MemoryAccepted(msgspec.Struct):
    id: uuid.UUID
    job_id: uuid.UUID | None
    status: Literal["pending", "ready", "failed"]


class Memory(msgspec.Struct):
    id: uuid.UUID
    content: str
    tags: list[str]
    metadata: dict[str, Any]
    status: Literal["pending", "ready", "failed"]
    created_at: datetime


class MemoryPage(msgspec.Struct):
    items: list[Memory]
    next_cursor: str | None


class MemorySearch(msgspec.Struct, forbid_unknown_fields=True):
    query: Annotated[
        str, msgspec.Meta(min_length=1, max_length=2000, description="What to recall, in words.")
    ]
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    tags: Tags = msgspec.field(default_factory=list)


class MemoryHit(msgspec.Struct):
    id: uuid.UUID
    content: str
    tags: list[str]
    metadata: dict[str, Any]
    created_at: datetime
    score: float
    similarity: float


class MemorySearchResult(msgspec.Struct):
    items: list[MemoryHit]
