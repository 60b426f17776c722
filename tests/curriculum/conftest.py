"""The NCERT seed data, loaded once per session with real embeddings (kept between tests)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.curriculum.loader import LoadReport, load_curriculum
from tests.utils.embedder import LocalEmbedder


@pytest.fixture(scope="session")
async def curriculum(sessions: async_sessionmaker[AsyncSession]) -> LoadReport:
    return await load_curriculum(sessions, LocalEmbedder())
