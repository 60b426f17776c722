"""`setu apps ...`: register and manage GPT apps from the terminal (the same operations as the admin API).

APP is an app's id or its client id. Every command takes `--json` for scripts.
"""

from __future__ import annotations

import datetime
from typing import Any

import click
import msgspec

from api.apps import services
from api.apps.schemas import AppCreate, AppCredentials, AppRead, AppUpdate
from api.audit.schemas import UsageStats
from api.audit.services import parse_window, usage_stats
from api.lib.console import print_fields, print_json, print_table, run
from api.lib.settings import get_settings
from api.oauth.runtime import OAuthRuntime, standalone_runtime
from api.oauth.scopes import DEFAULT_APP_SCOPES, SCOPES

_GRANTS = ["authorization_code", "refresh_token", "client_credentials"]
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _when(value: datetime.datetime | None) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def _show(app: AppRead, secret: str | None = None, *, with_secret: bool = False) -> None:
    fields: list[tuple[str, Any]] = [
        ("name", app.name),
        ("id", app.id),
        ("client id", app.client_id),
    ]
    if with_secret:
        fields.append(("client secret", secret or "(none: public client)"))
    fields += [
        ("client type", app.client_type),
        ("auth methods", ", ".join(app.token_endpoint_auth_methods)),
        ("redirect URIs", "\n".join(app.redirect_uris) or "(none)"),
        ("scopes", " ".join(app.scopes)),
        ("grant types", ", ".join(app.grant_types)),
        ("PKCE required", "yes" if app.require_pkce else "no"),
        (
            "rate limit",
            f"{app.rate_limit_per_minute}/min per app, {app.user_rate_limit_per_minute}/min per user",
        ),
        ("status", app.status),
        ("created", _when(app.created_at)),
        ("last used", _when(app.last_used_at)),
    ]
    print_fields(fields)
    if with_secret and secret:
        click.echo("\nCopy the client secret now: it is stored only as a hash and will not be shown again.")


async def _with_runtime(action: Any) -> Any:
    async with standalone_runtime(get_settings()) as runtime:
        return await action(runtime)


@click.group("apps")
def apps_group() -> None:
    """Register and manage GPT apps (OAuth clients)."""


@apps_group.command("create")
@click.option("--name", required=True, help="A name people recognise (shown on the consent page).")
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    help="Exact callback URL, e.g. https://chatgpt.com/aip/g-<id>/oauth/callback (repeatable).",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(list(SCOPES)),
    help=f"Allowed scope (repeatable; default: {' '.join(DEFAULT_APP_SCOPES)}).",
)
@click.option(
    "--grant",
    "grants",
    multiple=True,
    type=click.Choice(_GRANTS),
    help="Allowed grant (repeatable; default: authorization_code refresh_token).",
)
@click.option("--public", is_flag=True, help="A public client: no secret, PKCE required.")
@click.option("--require-pkce", is_flag=True, help="Require PKCE (ChatGPT does not send it: leave off).")
@click.option("--rate-limit", type=click.IntRange(1), help="Requests per minute for the whole app.")
@click.option("--user-rate-limit", type=click.IntRange(1), help="Requests per minute per end user.")
@json_option
def create_command(
    name: str,
    redirect_uris: tuple[str, ...],
    scopes: tuple[str, ...],
    grants: tuple[str, ...],
    public: bool,
    require_pkce: bool,
    rate_limit: int | None,
    user_rate_limit: int | None,
    as_json: bool,
) -> None:
    """Register a GPT app; prints its client id and (once) its client secret."""
    data = AppCreate(
        name=name,
        redirect_uris=list(redirect_uris),
        scopes=list(scopes) or list(DEFAULT_APP_SCOPES),  # type: ignore[arg-type]
        grant_types=list(grants) or ["authorization_code", "refresh_token"],  # type: ignore[arg-type]
        client_type="public" if public else "confidential",
        require_pkce=require_pkce,
        rate_limit_per_minute=rate_limit,
        user_rate_limit_per_minute=user_rate_limit,
    )

    async def action(runtime: OAuthRuntime) -> AppCredentials:
        async with runtime.sessions() as session, session.begin():
            app, secret = await services.create_app(session, runtime.settings, data)
            return AppCredentials(services.to_read(app), secret)

    created: AppCredentials = run(_with_runtime(action))
    if as_json:
        print_json(created)
    else:
        _show(created.app, created.client_secret, with_secret=True)


@apps_group.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List every GPT app."""

    async def action(runtime: OAuthRuntime) -> list[AppRead]:
        async with runtime.sessions() as session:
            apps, _ = await services.list_apps(session, limit=10_000, offset=0)
            return [services.to_read(app) for app in apps]

    apps: list[AppRead] = run(_with_runtime(action))
    if as_json:
        print_json(apps)
        return
    print_table(
        ["name", "client id", "status", "scopes", "limit/min", "last used"],
        [
            [
                app.name,
                app.client_id,
                app.status,
                " ".join(app.scopes),
                app.rate_limit_per_minute,
                _when(app.last_used_at),
            ]
            for app in apps
        ],
    )


@apps_group.command("show")
@click.argument("app_ref", metavar="APP")
@json_option
def show_command(app_ref: str, as_json: bool) -> None:
    """Show one GPT app."""

    async def action(runtime: OAuthRuntime) -> AppRead:
        async with runtime.sessions() as session:
            return services.to_read(await services.find_app(session, app_ref))

    app: AppRead = run(_with_runtime(action))
    if as_json:
        print_json(app)
    else:
        _show(app)


@apps_group.command("update")
@click.argument("app_ref", metavar="APP")
@click.option("--name")
@click.option(
    "--redirect-uri", "redirect_uris", multiple=True, help="Replace the callbacks with these (repeatable)."
)
@click.option("--add-redirect-uri", "added", multiple=True, help="Add a callback (repeatable).")
@click.option("--remove-redirect-uri", "removed", multiple=True, help="Remove a callback (repeatable).")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(list(SCOPES)), help="Replace the scopes.")
@click.option("--grant", "grants", multiple=True, type=click.Choice(_GRANTS), help="Replace the grants.")
@click.option("--require-pkce/--no-require-pkce", default=None)
@click.option("--rate-limit", type=click.IntRange(1))
@click.option("--user-rate-limit", type=click.IntRange(1))
@json_option
def update_command(
    app_ref: str,
    name: str | None,
    redirect_uris: tuple[str, ...],
    added: tuple[str, ...],
    removed: tuple[str, ...],
    scopes: tuple[str, ...],
    grants: tuple[str, ...],
    require_pkce: bool | None,
    rate_limit: int | None,
    user_rate_limit: int | None,
    as_json: bool,
) -> None:
    """Change an app. Callbacks, scopes and grants given here replace the old ones."""

    def given(value: Any) -> Any:
        return msgspec.UNSET if value in (None, ()) else (list(value) if isinstance(value, tuple) else value)

    async def action(runtime: OAuthRuntime) -> AppRead:
        async with runtime.sessions() as session, session.begin():
            app = await services.find_app(session, app_ref)
            uris = list(redirect_uris) if redirect_uris else list(app.redirect_uris)
            uris = [uri for uri in [*uris, *added] if uri not in removed]
            changed_uris = bool(redirect_uris or added or removed)
            update = AppUpdate(
                name=given(name),
                redirect_uris=uris if changed_uris else msgspec.UNSET,
                scopes=given(scopes),
                grant_types=given(grants),
                require_pkce=given(require_pkce),
                rate_limit_per_minute=given(rate_limit),
                user_rate_limit_per_minute=given(user_rate_limit),
            )
            return services.to_read(await services.update_app(session, app.id, update))

    app: AppRead = run(_with_runtime(action))
    if as_json:
        print_json(app)
    else:
        _show(app)


def _status_command(name: str, help_text: str, operation: Any) -> click.Command:
    @click.argument("app_ref", metavar="APP")
    @json_option
    def command(app_ref: str, as_json: bool) -> None:
        async def action(runtime: OAuthRuntime) -> AppRead:
            async with runtime.sessions() as session, session.begin():
                app = await services.find_app(session, app_ref)
                return services.to_read(await operation(session, runtime.denylist, app.id))

        app: AppRead = run(_with_runtime(action))
        if as_json:
            print_json(app)
        else:
            click.echo(f"{app.name} ({app.client_id}) is now {app.status}.")

    command.__doc__ = help_text
    return click.command(name)(command)


apps_group.add_command(
    _status_command(
        "suspend", "Refuse the app's tokens at once, and new token requests.", services.suspend_app
    )
)
apps_group.add_command(_status_command("resume", "Accept a suspended app again.", services.resume_app))


@apps_group.command("delete")
@click.argument("app_ref", metavar="APP")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def delete_command(app_ref: str, yes: bool, as_json: bool) -> None:
    """Delete an app and its tokens (its audit history is kept)."""

    async def find(runtime: OAuthRuntime) -> AppRead:
        async with runtime.sessions() as session:
            return services.to_read(await services.find_app(session, app_ref))

    async def delete(runtime: OAuthRuntime) -> None:
        async with runtime.sessions() as session, session.begin():
            await services.delete_app(session, runtime.denylist, app.id)

    app: AppRead = run(_with_runtime(find))
    if not yes:
        click.confirm(f"Delete {app.name} ({app.client_id}) and revoke all its tokens?", abort=True)
    run(_with_runtime(delete))
    if as_json:
        print_json({"deleted": app.client_id, "id": app.id})
    else:
        click.echo(f"Deleted {app.name} ({app.client_id}); its audit history is kept.")


@apps_group.command("reset-secret")
@click.argument("app_ref", metavar="APP")
@json_option
def reset_secret_command(app_ref: str, as_json: bool) -> None:
    """Replace the client secret (the old one stops working at once); prints the new one once."""

    async def action(runtime: OAuthRuntime) -> AppCredentials:
        async with runtime.sessions() as session, session.begin():
            app = await services.find_app(session, app_ref)
            app, secret = await services.reset_secret(session, app.id)
            return AppCredentials(services.to_read(app), secret)

    reset: AppCredentials = run(_with_runtime(action))
    if as_json:
        print_json(reset)
    else:
        _show(reset.app, reset.client_secret, with_secret=True)


@apps_group.command("stats")
@click.argument("app_ref", metavar="APP")
@click.option("--since", default="24h", show_default=True, help="Window: 30m, 24h, 7d...")
@json_option
def stats_command(app_ref: str, since: str, as_json: bool) -> None:
    """Calls by operation, error rate, p50/p95 latency and last use."""
    try:
        window = parse_window(since)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None

    async def action(runtime: OAuthRuntime) -> tuple[AppRead, UsageStats]:
        async with runtime.sessions() as session:
            app = await services.find_app(session, app_ref)
            return services.to_read(app), await usage_stats(session, app.id, window)

    app, stats = run(_with_runtime(action))
    if as_json:
        print_json(stats)
        return
    click.echo(
        f"{app.name} ({app.client_id}) since {_when(stats.since)}: {stats.calls} calls, "
        f"error rate {stats.error_rate:.1%}, p50 {_ms(stats.p50_ms)}, p95 {_ms(stats.p95_ms)}, "
        f"last used {_when(stats.last_used_at)}"
    )
    if stats.operations:
        print_table(
            ["operation", "calls", "errors", "error rate", "p50", "p95", "last call"],
            [
                [
                    row.operation,
                    row.calls,
                    row.errors,
                    f"{row.error_rate:.1%}",
                    _ms(row.p50_ms),
                    _ms(row.p95_ms),
                    _when(row.last_called_at),
                ]
                for row in stats.operations
            ],
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
