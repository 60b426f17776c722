"""Deploy a Serve config file to the Ray cluster this process is connected to, and report on it.

The same steps `serve run CONFIG` / `serve deploy CONFIG` take (config file in, applications out), without
needing Ray's dashboard: `setu serving up`, `make run` and the test fixtures all deploy through here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

_SETTLED = {"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"}


def read_config(path: Path) -> dict[str, Any]:
    """A Serve config file (YAML), as a dict."""
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or "applications" not in config:
        raise ValueError(f"{path} is not a Serve config file (no `applications:`)")
    return config


def deploy(config: dict[str, Any], *, timeout_s: float = 300) -> dict[str, Any]:
    """Apply `config` (declaratively: applications not in it are removed) and wait until it settles.

    Returns the status report; raises RuntimeError naming the deployment and message when one failed.
    """
    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
    )
    client.deploy_apps(schema)
    names = {app.name for app in schema.applications}
    deadline = time.monotonic() + timeout_s
    while True:
        report = status_report()
        states = {name: report["applications"].get(name, {}).get("status") for name in names}
        if all(state in _SETTLED for state in states.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"Serve applications not running after {timeout_s:g} s: {states}")
        time.sleep(0.5)
    failed = {name: state for name, state in states.items() if state != "RUNNING"}
    if failed:
        raise RuntimeError(f"Serve deploy failed: {failed}; details: {report}")
    return report


def status_report() -> dict[str, Any]:
    """Applications, their deployments, replica counts by state and health, as plain data."""
    status = serve.status()
    return {
        "proxies": {node: str(getattr(state, "value", state)) for node, state in status.proxies.items()},
        "applications": {
            name: {
                "status": str(getattr(app.status, "value", app.status)),
                "message": app.message,
                "deployments": {
                    deployment_name: {
                        "status": str(getattr(deployment.status, "value", deployment.status)),
                        "replicas": {
                            str(getattr(state, "value", state)): count
                            for state, count in deployment.replica_states.items()
                        },
                        "message": deployment.message,
                    }
                    for deployment_name, deployment in app.deployments.items()
                },
            }
            for name, app in status.applications.items()
        },
    }
