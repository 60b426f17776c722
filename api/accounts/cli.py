"""`setu users ...`: create and list end users from the terminal."""

from __future__ import annotations

import click

from api.accounts import services
from api.accounts.schemas import UserCreated, UserRead
from api.lib.console import print_fields, print_json, print_table, run
from api.lib.settings import get_settings
from api.oauth.runtime import standalone_runtime


@click.group("users")
def users_group() -> None:
    """Create and list end users (admins, teachers, students)."""


@users_group.command("create")
@click.option("--email", required=True, help="Login e-mail address.")
@click.option("--role", required=True, type=click.Choice(["admin", "teacher", "student"]))
@click.option("--name", help="Display name.")
@click.option(
    "--generate-password", is_flag=True, help="Generate a password and print it once (else prompted)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def create_command(email: str, role: str, name: str | None, generate_password: bool, as_json: bool) -> None:
    """Create a user. The password is prompted for, or generated and shown once."""
    password = None
    if not generate_password:
        password = click.prompt(
            "Password (at least 10 characters)", hide_input=True, confirmation_prompt=True
        )
        if len(password) < 10:
            raise click.BadParameter("the password must have at least 10 characters", param_hint="password")

    async def action() -> UserCreated:
        async with (
            standalone_runtime(get_settings()) as runtime,
            runtime.sessions() as session,
            session.begin(),
        ):
            user, generated = await services.create_user(
                session, runtime.passwords, email=email, role=role, password=password, name=name
            )
            return UserCreated(services.to_read(user), generated)

    created: UserCreated = run(action())
    if as_json:
        print_json(created)
        return
    user = created.user
    fields = [("email", user.email), ("role", user.role), ("id", user.id)]
    if created.generated_password:
        fields.append(("password", created.generated_password))
    print_fields(fields)
    if created.generated_password:
        click.echo(
            "\nCopy the password now: it is stored only as an argon2id hash and will not be shown again."
        )


@users_group.command("list")
@click.option("--role", type=click.Choice(["admin", "teacher", "student"]))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(role: str | None, as_json: bool) -> None:
    """List users."""

    async def action() -> list[UserRead]:
        async with standalone_runtime(get_settings()) as runtime, runtime.sessions() as session:
            users, _ = await services.list_users(session, limit=100_000, offset=0, role=role)
            return [services.to_read(user) for user in users]

    users: list[UserRead] = run(action())
    if as_json:
        print_json(users)
        return
    print_table(
        ["email", "role", "active", "last sign-in"],
        [
            [user.email, user.role, "yes" if user.is_active else "no", user.last_login_at or "never"]
            for user in users
        ],
    )
