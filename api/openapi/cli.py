"""`setu docs gpt-actions|html|postman`: write the published API descriptions to files or stdout."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec
from litestar import Litestar

from api.openapi.gpt import GptSchemaError, build_gpt_schema, render
from api.openapi.postman import build_collection


def _app() -> Litestar:
    from api.app import create_app

    return create_app()  # `setu docs` runs offline: nothing connects (see api/cli.py)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


@click.group("docs")
def docs_group() -> None:
    """API descriptions: the GPT Actions schema, a static ReDoc page, a Postman collection."""


@docs_group.command("gpt-actions")
@click.option("--server-url", required=True, help="The https URL GPTs reach this deployment at.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default: stdout)."
)
def gpt_actions_command(server_url: str, output: Path | None) -> None:
    """The schema to paste into the GPT editor's Actions form."""
    try:
        document = build_gpt_schema(_app(), server_url)
    except GptSchemaError as error:
        raise click.ClickException(str(error)) from None
    _write(render(document), output)


@docs_group.command("html")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/api.html")
)
def html_command(output: Path) -> None:
    """A static ReDoc page with the full OpenAPI spec embedded (opens without the server)."""
    spec = msgspec.json.encode(_app().openapi_schema.to_schema()).decode()
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>ShikshaSetu API</title></head>\n'
        '<body><div id="redoc"></div>\n'
        '<script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"></script>\n'
        f"<script>Redoc.init({spec}, {{}}, document.getElementById('redoc'));</script></body></html>\n"
    )
    _write(page, output)


@docs_group.command("postman")
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/postman_collection.json"),
)
def postman_command(base_url: str, output: Path) -> None:
    """A Postman v2.1 collection with OAuth 2.0 (authorization code) settings."""
    collection = build_collection(msgspec.to_builtins(_app().openapi_schema.to_schema()), base_url)
    _write(msgspec.json.format(msgspec.json.encode(collection), indent=2).decode() + "\n", output)
