"""Terminal output of `setu` commands: tables for people, `--json` for scripts; domain errors as messages."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table

from api.lib.errors import DomainError

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a domain error becomes a one-line message and exit status 1."""
    try:
        return asyncio.run(coroutine)
    except DomainError as error:
        raise click.ClickException(error.detail) from None


def print_json(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """`name: value` lines, aligned."""
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name.ljust(width)}  {'' if value is None else value}")
