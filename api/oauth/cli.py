"""`setu keys ...`: the JWT signing keys."""

from __future__ import annotations

import click

from api.lib.console import print_json, print_table, run
from api.lib.settings import get_settings
from api.oauth.runtime import standalone_runtime


@click.group("keys")
def keys_group() -> None:
    """JWT signing keys (ES256, private halves encrypted in the database)."""


@keys_group.command("rotate")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def rotate_command(as_json: bool) -> None:
    """Sign new tokens with a new key; old keys stay in the JWKS until the tokens they signed expire."""

    async def action() -> tuple[str, list[str]]:
        async with (
            standalone_runtime(get_settings()) as runtime,
            runtime.sessions() as session,
            session.begin(),
        ):
            return await runtime.keys.rotate(session)

    kid, retired = run(action())
    if as_json:
        print_json({"kid": kid, "retired": retired})
        return
    click.echo(f"New signing key {kid}; every API worker signs with it from its next token.")
    for old in retired:
        click.echo(f"Retired {old}: still published in the JWKS until the tokens it signed have expired.")


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """The published public keys, newest first."""

    async def action() -> list[dict[str, object]]:
        async with standalone_runtime(get_settings()) as runtime, runtime.sessions() as session:
            return await runtime.keys.published(session)

    keys = run(action())
    if as_json:
        print_json(keys)
    else:
        print_table(["kid", "alg", "crv"], [[key.get("kid"), key.get("alg"), key.get("crv")] for key in keys])
