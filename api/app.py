"""The Litestar application factory."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from api.lib.db import sqlalchemy_config
from api.lib.logging import configure_logging
from api.lib.settings import Settings, get_settings
from api.openapi.errors import StrictStructSchemaPlugin
from api.plugin import ShikshaSetuPlugin


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app from settings (read from the environment when not given)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    db_config = sqlalchemy_config(settings)
    return Litestar(
        plugins=[
            StrictStructSchemaPlugin(),  # before Litestar's own, so it describes our structs
            SQLAlchemyPlugin(config=db_config),
            ShikshaSetuPlugin(settings, db_config),
        ],
        openapi_config=OpenAPIConfig(title="ShikshaSetu API", version="1.0.0", path="/schema"),
        logging_config=None,
        debug=False,
    )
