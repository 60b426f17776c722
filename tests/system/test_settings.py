"""Configuration errors name the variable and what is expected."""

from __future__ import annotations

import pytest

from api.lib.settings import SettingsError, load_settings


def test_bad_database_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/db")
    with pytest.raises(SettingsError, match=r"DATABASE_URL: .*PostgreSQL URL"):
        load_settings()


def test_bad_port_names_the_prefixed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SETU_PORT", "eighty")
    with pytest.raises(SettingsError, match="SETU_PORT"):
        load_settings()


def test_bad_redis_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://localhost:6379")
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load_settings()


def test_database_url_gets_the_asyncpg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/setu")
    assert load_settings().async_database_url == "postgresql+asyncpg://u:p@db:5432/setu"
