"""`setu verify --url URL`: run the deployment checks and print a pass/fail table (or JSON).

Exit status 1 when any check fails; warnings and skipped checks are shown but do not fail the run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from api.lib.console import print_json, print_table
from api.verify.checks import Outcome, Target, verify

_MARKS = {Outcome.PASS: "PASS", Outcome.WARN: "WARN", Outcome.SKIP: "skip", Outcome.FAIL: "FAIL"}


@click.command("verify")
@click.option("--url", required=True, help="The deployment's address, e.g. https://setu.example.org.")
@click.option(
    "--client-id",
    envvar="SETU_VERIFY_CLIENT_ID",
    help="A GPT app allowed the client_credentials grant (env SETU_VERIFY_CLIENT_ID).",
)
@click.option(
    "--client-secret",
    envvar="SETU_VERIFY_CLIENT_SECRET",
    help="Its secret; prefer the env SETU_VERIFY_CLIENT_SECRET (arguments show in process lists).",
)
@click.option(
    "--metrics-url",
    envvar="SETU_VERIFY_METRICS_URL",
    help="Where /metrics is served when not on URL (env SETU_VERIFY_METRICS_URL; default URL/metrics).",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM bundle to trust instead of the system's (a private CA).",
)
@click.option("--timeout", type=click.FloatRange(min=0.1, max=120), default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def verify_command(
    url: str,
    client_id: str | None,
    client_secret: str | None,
    metrics_url: str | None,
    ca_file: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Check a deployment: health, readiness of each component, metrics, OAuth metadata, JWKS, the GPT
    schema, a client-credentials token and an authenticated call."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"expected an http(s) URL, got {url!r}", param_hint="--url")
    target = Target(url=url, metrics_url=metrics_url, client_id=client_id, client_secret=client_secret)
    results = verify(target, timeout=timeout, ca_file=str(ca_file) if ca_file else None)
    counts = Counter(result.outcome for result in results)
    failed = counts[Outcome.FAIL] > 0
    if as_json:
        print_json(
            {
                "url": url,
                "ok": not failed,
                "counts": {outcome.value: counts[outcome] for outcome in Outcome},
                "checks": [
                    {"name": result.name, "outcome": result.outcome.value, "detail": result.detail}
                    for result in results
                ],
            }
        )
    else:
        print_table(
            ["check", "result", "detail"],
            [[result.name, _MARKS[result.outcome], result.detail] for result in results],
            title=f"setu verify {url}",
        )
        click.echo(
            f"{counts[Outcome.PASS]} passed, {counts[Outcome.FAIL]} failed, "
            f"{counts[Outcome.WARN]} warnings, {counts[Outcome.SKIP]} skipped"
        )
    if failed:
        raise SystemExit(1)
