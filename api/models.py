"""Imports every domain's models so Alembic and the tests see the whole schema."""
