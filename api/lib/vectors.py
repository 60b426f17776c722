"""pgvector column type and the embedding dimension the schema is built for."""

from __future__ import annotations

from pgvector.sqlalchemy import Vector

# The default embedder (all-MiniLM-L6-v2) and the production multilingual one are both 384-d;
# another dimension needs a migration and a re-embed.
EMBEDDING_DIMENSION = 384


def embedding_column_type() -> Vector:
    return Vector(EMBEDDING_DIMENSION)
