"""Apply Alembic migrations programmatically (used by `setu up` and the test fixtures)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from api.lib.db import MIGRATIONS_DIR


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, revision)
