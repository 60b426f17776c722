"""One typed settings object, read from the environment and an optional `.env` file."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_ALIASES = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "serving_url": "SERVING_URL",
}


class SettingsError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""


class Settings(BaseSettings):
    """Everything the service reads from its environment. Unprefixed: DATABASE_URL, REDIS_URL, SERVING_URL."""

    model_config = SettingsConfigDict(env_prefix="SETU_", env_file=".env", extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))
    serving_url: str | None = Field(default=None, validation_alias=AliasChoices("SERVING_URL"))

    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool | None = None
    data_dir: Path = Field(default_factory=lambda: Path(user_data_dir("shikshasetu", appauthor=False)))
    public_url: str | None = None

    db_pool_size: int = Field(default=32, ge=1, le=200)
    db_pool_overflow: int = Field(default=8, ge=0, le=200)
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    ready_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    curriculum_cache_seconds: float = Field(default=1.0, ge=0, le=3600)
    """How often each process checks whether the curriculum changed (its in-memory answers are then
    dropped): the longest a `setu curriculum load` takes to show. 0 turns the cache off."""

    # The ML tier client (api/lib/serving.py)
    serving_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    serving_generation_timeout_seconds: float = Field(default=40.0, gt=0, le=600)
    serving_connect_timeout_seconds: float = Field(default=0.25, gt=0, le=10)
    serving_retries: int = Field(default=2, ge=0, le=5)
    serving_breaker_failures: int = Field(default=5, ge=1, le=1000)
    serving_breaker_reset_seconds: float = Field(default=10.0, gt=0, le=600)
    serving_port: int = Field(default=8400, ge=1, le=65535)
    """Serve's HTTP port for the local Ray that `setu up` / `setu serving up` start."""
    serving_metrics_port: int = Field(default=8401, ge=1, le=65535)
    """Prometheus export port of that local Ray (`ray_serve_*`, `ray_setu_ml_*`)."""

    worker_embedded: bool = True
    worker_concurrency: int = Field(default=16, ge=1, le=64)
    job_lease_seconds: float = Field(default=120.0, ge=1, le=3600)
    memory_max_chars: int = Field(default=8000, ge=100, le=100_000)
    memory_max_per_user: int = Field(default=1000, ge=1, le=1_000_000)
    memory_pending_grace_seconds: float = Field(default=60.0, ge=0)
    memory_recency_weight: float = Field(default=0.15, ge=0, le=1)
    memory_recency_half_life_days: float = Field(default=30.0, gt=0)
    content_max_chars: int = Field(default=6000, ge=100, le=50_000)
    content_sync_seconds: float = Field(default=35.0, gt=0, le=44)

    # OAuth authorization server, rate limits (issue 3)
    access_token_ttl_minutes: int = Field(default=15, ge=15, le=60)
    refresh_token_ttl_days: int = Field(default=30, ge=1, le=365)
    authorization_code_ttl_seconds: int = Field(default=60, ge=10, le=60)
    signing_key_secret: SecretStr | None = None
    """Encrypts the JWT signing keys at rest; when unset, a random one is kept in `data_dir`."""
    rate_limit_app_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    rate_limit_user_per_minute: int = Field(default=60, ge=1, le=1_000_000)
    client_auth_failure_limit: int = Field(default=10, ge=1, le=10_000)
    """Failed client authentications (or sign-ins) allowed in 10 minutes per client id (or e-mail); five
    times as many per IP address."""
    rate_limit_fail_closed: bool = False
    """When Redis is unreachable: False lets requests through (logged, counted); True answers 503."""

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
            raise ValueError(
                "expected a PostgreSQL URL such as postgresql://user:password@host:5432/dbname, "
                f"got scheme {scheme or '(none)'!r}"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = urlsplit(value).scheme
        if scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(f"expected a URL such as redis://host:6379/0, got scheme {scheme or '(none)'!r}")
        return value

    @field_validator("serving_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:8400, got {value!r}")
        return value.rstrip("/")

    @property
    def async_database_url(self) -> str:
        """DATABASE_URL with the asyncpg driver named, as SQLAlchemy wants it."""
        if self.database_url is None:
            raise SettingsError("DATABASE_URL is not set and no embedded PostgreSQL was started")
        _, _, rest = self.database_url.partition("://")
        return f"postgresql+asyncpg://{rest}"

    @property
    def base_url(self) -> str:
        """The URL clients use to reach us (issuer of tokens, links in metadata)."""
        return self.public_url or f"http://{self.host}:{self.port}"


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        variable = _ALIASES.get(field, field if field.isupper() else f"SETU_{field.upper()}")
        lines.append(f"{variable}: {item['msg']} (got {item.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings() -> Settings:
    """Read settings from the environment; raise SettingsError naming each bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()
