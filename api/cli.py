"""`setu`: the Litestar CLI with our app preselected, plus our own command groups.

Commands that touch data first start the embedded PostgreSQL and Valkey when `DATABASE_URL`/`REDIS_URL`
are not set, and stop them when the command ends (Ctrl-C and SIGTERM included).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType
from typing import Any

import click

from api.lib.embedded import EmbeddedServices, export
from api.lib.settings import Settings, SettingsError, get_settings

APP_PATH = "api.app:create_app"
OFFLINE_DATABASE_URL = "postgresql://offline@localhost/offline"
OFFLINE_REDIS_URL = "redis://localhost:6379/0"
# Commands that never need a database or redis.
_OFFLINE_COMMANDS = {"routes", "schema", "version", "info", "docs", "serving", "verify", "--help", "-h"}


def _needs_services(argv: list[str]) -> bool:
    words = [arg for arg in argv if not arg.startswith("-") or arg in {"--help", "-h"}]
    return bool(words) and words[0] not in _OFFLINE_COMMANDS and "--help" not in argv


@click.command("up")
def up_command() -> None:
    """Start the whole local service: migrations, then the API (embedded servers when not configured)."""
    import uvicorn

    from api.lib.migrate import upgrade_database

    settings = get_settings()
    start_local_serving = _plugin("local_serving")
    if start_local_serving is not None:
        url = start_local_serving(settings)  # unless SERVING_URL is set; stopped when we exit
        if url:
            os.environ["SERVING_URL"] = url
            get_settings.cache_clear()
            settings = get_settings()
    elif not settings.serving_url:
        click.echo("Serving: not installed (the `serving` extra); ML features answer 503", err=True)
    assert settings.database_url is not None
    upgrade_database(settings.database_url)
    asyncio.run(_prepare_data(settings))
    base = f"http://{settings.host}:{settings.port}"
    click.echo(
        f"ShikshaSetu API on {base}\n"
        f"  health  {base}/health\n  ready   {base}/ready\n  metrics {base}/metrics\n"
        f"  docs    {base}/schema\n"
        f"Data in {settings.data_dir}. Press Ctrl-C to stop."
    )
    uvicorn.run(
        APP_PATH,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,  # no `server: uvicorn` on every answer
        timeout_graceful_shutdown=10,
    )


async def _prepare_data(settings: Settings) -> None:
    """Idempotent on every start: the curriculum seed (embedded through serving), first-run credentials."""
    from api.bootstrap import first_run
    from api.curriculum.cli import load
    from api.curriculum.loader import DATA_DIR

    report = await load(settings, DATA_DIR, show_progress=True)
    click.echo(
        f"Curriculum: {report.standards_upserted} standards added or changed, {report.embedded} embedded, "
        f"{report.missing_embeddings} without an embedding"
    )
    credentials = await first_run(settings)
    if credentials:
        click.echo(credentials)


PLUGIN_GROUP = "setu.plugins"


def _plugin(name: str) -> Any:
    """What another package of ours offers `setu` by entry point, or None when it is not installed:
    `serving` makes the ML tier's command group from our settings getter, `local_serving` is what `setu up`
    calls to start a local ML tier (it returns its URL)."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=PLUGIN_GROUP, name=name):
        return entry_point.load()
    return None


def setu_group() -> click.Group:
    """Litestar's CLI group with our command groups added."""
    from litestar.cli.main import litestar_group

    from api.accounts.cli import users_group
    from api.apps.cli import apps_group
    from api.curriculum.cli import curriculum_group
    from api.jobs.cli import worker_command
    from api.lib.cleantext import guard_cli
    from api.oauth.cli import keys_group
    from api.openapi.cli import docs_group
    from api.verify.cli import verify_command

    # Our command groups, one per domain that has one.
    for command in (
        up_command,
        apps_group,
        users_group,
        keys_group,
        curriculum_group,
        worker_command,
        docs_group,
        verify_command,
    ):
        litestar_group.add_command(command)  # type: ignore[arg-type]
    serving_commands = _plugin("serving")  # `setu serving ...`, from the serving package when installed
    if serving_commands is not None:
        litestar_group.add_command(serving_commands(get_settings))
    return guard_cli(litestar_group)  # NUL/lone surrogate in any parameter: a usage error


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("LITESTAR_APP", APP_PATH)
    try:
        settings = get_settings()
    except SettingsError as error:
        sys.stderr.write(f"setu: {error}\n")
        raise SystemExit(2) from None
    os.environ.setdefault("LITESTAR_HOST", settings.host)
    os.environ.setdefault("LITESTAR_PORT", str(settings.port))
    os.environ.setdefault("WEB_CONCURRENCY", str(settings.workers))

    from api.lib.logging import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    # SIGTERM must unwind the stack (like Ctrl-C) so embedded servers are stopped in `finally`.
    signal.signal(signal.SIGTERM, _raise_system_exit)

    services = None
    if _needs_services(argv) and (settings.database_url is None or settings.redis_url is None):
        services = EmbeddedServices(
            settings.data_dir, postgres=settings.database_url is None, valkey=settings.redis_url is None
        )
        export(services.start())
        get_settings.cache_clear()
    elif not _needs_services(argv):
        # Offline commands (routes, schema, docs, serving) still build the app; nothing connects to these.
        os.environ.setdefault("DATABASE_URL", OFFLINE_DATABASE_URL)
        os.environ.setdefault("REDIS_URL", OFFLINE_REDIS_URL)
        get_settings.cache_clear()
    try:
        if _needs_services(argv):
            from api.lib.preflight import check_database

            check_database(get_settings())
        setu_group().main(args=argv, prog_name="setu")
    except SettingsError as error:
        sys.stderr.write(f"setu: {error}\n")
        raise SystemExit(2) from None
    finally:
        if services is not None:
            services.stop()
