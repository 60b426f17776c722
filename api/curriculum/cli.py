"""`setu curriculum load [PATH]`: load the NCERT seed data and embed it through the serving tier."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import Progress

from api.curriculum.loader import DATA_DIR, LoadReport, load_curriculum
from api.lib.console import print_json, run
from api.lib.db import standalone_sessions
from api.lib.serving import ServingClient
from api.lib.settings import Settings, get_settings


async def load(settings: Settings, path: Path, *, show_progress: bool) -> LoadReport:
    """Upsert the seed, then embed what lacks an embedding (with serving down, the worker does it later)."""
    serving = ServingClient.from_settings(settings) if settings.serving_url else None
    try:
        async with standalone_sessions(settings) as sessions:
            with Progress(disable=not show_progress, transient=True) as progress:
                task = progress.add_task("embedding standards", total=None)
                return await load_curriculum(
                    sessions,
                    serving,
                    path,
                    lambda done, total: progress.update(task, completed=done, total=total),
                )
    finally:
        if serving is not None:
            await serving.aclose()


@click.group("curriculum")
def curriculum_group() -> None:
    """NCERT/CBSE curriculum data."""


@curriculum_group.command("load")
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def load_command(path: Path | None, as_json: bool) -> None:
    """Load (idempotently) the seed files in PATH (default: the packaged NCERT data) and embed them."""
    report = run(load(get_settings(), path or DATA_DIR, show_progress=not as_json))
    if as_json:
        print_json(report.__dict__)
        return
    click.echo(
        f"{report.standards_upserted} standards added or changed, {report.books_upserted} books, "
        f"{report.embedded} embedded; {report.missing_embeddings} still without an embedding"
    )
