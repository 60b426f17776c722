"""`setu serving up|status|down` (the ML tier on a private local Ray), and the local serving of `setu up`.

The `setu` command (api/cli.py) finds both through entry points (pyproject.toml, group `setu.plugins`) and
hands over its settings, so neither package imports the other: without the `serving` extra, `setu` simply has
no `serving` group and `setu up` expects SERVING_URL. Ray is imported only by the commands that need it.
"""

from __future__ import annotations

import atexit
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import click
import httpx


class Settings(Protocol):
    """What these commands read of the API's settings."""

    data_dir: Path
    serving_url: str | None
    serving_port: int
    serving_metrics_port: int


_settings: Callable[[], Settings] | None = None


def get_settings() -> Settings:
    if _settings is None:
        raise click.ClickException("the serving commands run inside `setu` (it provides the settings)")
    return _settings()


def serving_commands(settings: Callable[[], Settings]) -> click.Group:
    """The `serving` group, reading settings through `settings` (the `setu.plugins` entry point)."""
    global _settings
    _settings = settings
    return serving_group


def _state_dir(settings: Settings) -> Path:
    return settings.data_dir / "serving"


@click.group("serving")
def serving_group() -> None:
    """The ML tier (Ray Serve): a private local Ray running cluster/serve-local.yaml, or SERVING_URL."""


@serving_group.command("up")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Serve config file (default: cluster/serve-local.yaml).",
)
def up_command(config_path: Path | None) -> None:
    """Start a local Ray head and deploy the Serve config; returns once the app runs."""
    from serving.local import LOCAL_CONFIG, deploy_config, start_head, stop_head

    settings = get_settings()
    if settings.serving_url:
        raise click.ClickException(f"SERVING_URL is set ({settings.serving_url}): serving runs elsewhere")
    state_dir = _state_dir(settings)
    try:
        state = start_head(
            state_dir, http_port=settings.serving_port, metrics_port=settings.serving_metrics_port
        )
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Ray head running (PID {state.pid}, temp dir {state.temp_dir}); deploying...")
    try:
        token_path = state.auth_token_path(state_dir)
        deploy_config(state.address, config_path or LOCAL_CONFIG, settings.serving_port, token_path)
    except (RuntimeError, ValueError) as error:
        stop_head(state_dir)
        raise click.ClickException(f"deploy failed, Ray stopped: {error}") from None
    click.echo(
        f"ML tier on {state.http_url} (metrics {state.metrics_url}).\n"
        f"  export SERVING_URL={state.http_url}\n  setu serving status | setu serving down"
    )


@serving_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def status_command(as_json: bool) -> None:
    """Applications, deployments, replicas and model health."""
    from serving.local import read_state

    settings = get_settings()
    state_dir = _state_dir(settings)
    state = read_state(state_dir)
    report: dict[str, Any] = {}
    if state is not None:
        report["ray"] = {"pid": state.pid, "address": state.address, "metrics": state.metrics_url}
        report["serve"] = _serve_status(state.address, state.auth_token_path(state_dir))
    url = settings.serving_url or (state.http_url if state else None)
    if url is None:
        raise click.ClickException("no local serving is running (setu serving up) and SERVING_URL is unset")
    report["url"] = url
    try:
        report["health"] = httpx.get(f"{url}/health", timeout=5).json()
    except (httpx.HTTPError, ValueError) as error:
        report["health"] = {"status": "unreachable", "reason": str(error)}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(_render(report))


@serving_group.command("down")
def down_command() -> None:
    """Stop the local Ray that `setu serving up` started (only ours: never `ray stop`)."""
    from serving.local import stop_head

    if stop_head(_state_dir(get_settings())):
        click.echo("Local Ray stopped.")
    else:
        click.echo("No local Ray of ours was running.")


def _serve_status(address: str, token_path: Path) -> dict[str, Any]:
    from serving.local import connect

    try:
        connect(address, token_path)
    except (ConnectionError, RuntimeError) as error:
        return {"error": f"cannot reach Ray at {address}: {error}"}
    import ray

    from serving.runtime import status_report

    try:
        return status_report()
    finally:
        ray.shutdown()


def _render(report: dict[str, Any]) -> str:
    lines = [f"Serving {report['url']}: {report['health'].get('status')}"]
    if "ray" in report:
        lines.append(
            f"Ray head PID {report['ray']['pid']} at {report['ray']['address']}, {report['ray']['metrics']}"
        )
    for name, app in report.get("serve", {}).get("applications", {}).items():
        lines.append(f"application {name}: {app['status']} {app['message']}".rstrip())
        for deployment, info in app["deployments"].items():
            replicas = (
                ", ".join(f"{count} {state.lower()}" for state, count in info["replicas"].items()) or "none"
            )
            lines.append(f"  {deployment:<11} {info['status']:<10} replicas: {replicas}")
    for kind, card in report["health"].get("models", {}).items():
        reason = f" ({card['reason']})" if card.get("reason") else ""
        lines.append(f"model {kind:<11} {card.get('id')}: {card.get('status')}{reason}")
    if "reason" in report["health"]:
        lines.append(f"  {report['health']['reason']}")
    return "\n".join(lines)


def start_local_serving(settings: Settings) -> str | None:
    """For `setu up`: unless SERVING_URL is set, start a local Ray, deploy the CPU config in the background
    and stop it when the process exits. Returns its URL (the caller points SERVING_URL at it), or None.

    Serving is optional: if Ray cannot start, the API runs without it (and /ready says so)."""
    if settings.serving_url:
        click.echo(f"Serving: external, {settings.serving_url}")
        return None
    from serving.local import LOCAL_CONFIG, deploy_in_subprocess, start_head, stop_head

    state_dir = _state_dir(settings)
    try:
        state = start_head(
            state_dir, http_port=settings.serving_port, metrics_port=settings.serving_metrics_port
        )
    except RuntimeError as error:
        click.echo(
            f"Serving: not started ({error}); ML features answer 503 until SERVING_URL is set", err=True
        )
        return None
    deployer = deploy_in_subprocess(state, state_dir, LOCAL_CONFIG)

    def stop() -> None:
        if deployer.poll() is None:
            deployer.terminate()
            deployer.wait(timeout=10)
        stop_head(state_dir)

    atexit.register(stop)
    click.echo(
        f"Serving: local Ray (PID {state.pid}) deploying cluster/serve-local.yaml on {state.http_url}, "
        f"metrics {state.metrics_url}; log in {state_dir}"
    )
    return state.http_url
