"""Prometheus, Alertmanager and Grafana configuration: valid for the real tools, every alert unit-tested and
documented, every metric named one that our code or Ray emits, every dashboard provisioned."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.conftest import COMPOSE_FILES, DOCKER, REPO

PROMETHEUS = DOCKER / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
DASHBOARDS = sorted((DOCKER / "grafana/dashboards").glob("*.json"))
OPERATIONS = REPO / "docs/operations.md"

# The Ray families the rules and dashboards rely on, as Ray 2.60 names them on a node's metrics export port
# (seen on `ray start --metrics-export-port` with a batched Serve deployment). GPU families appear only on
# nodes with a GPU.
RAY_FAMILIES = {
    "ray_serve_deployment_status",
    "ray_serve_deployment_replica_healthy",
    "ray_serve_autoscaling_target_replicas",
    "ray_serve_deployment_queued_queries",
    "ray_serve_replica_processing_queries",
    "ray_serve_num_ongoing_http_requests",
    "ray_serve_num_http_requests_total",
    "ray_serve_http_request_latency_ms_bucket",
    "ray_serve_deployment_processing_latency_ms_bucket",
    "ray_serve_batch_wait_time_ms_bucket",
    "ray_serve_batch_queue_length",
    "ray_serve_actual_batch_size_bucket",
}
RAY_GPU_FAMILIES = {"ray_node_gram_used", "ray_node_gram_available", "ray_node_gpus_utilization"}
_METRIC = re.compile(r"\b(?:setu|ray)_[a-z0-9_]+\b|\bup\b(?=\{)")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make promtool` installs Debian's prometheus package")
    return found


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alert_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    return [case for test in tests for case in test["alert_rule_test"]]


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def _dashboard_queries() -> dict[str, list[str]]:
    queries: dict[str, list[str]] = {}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                if "expr" in target:
                    queries.setdefault(path.name, []).append(target["expr"])
    return queries


def _metric_names(expression: str) -> set[str]:
    return set(_METRIC.findall(expression))


def _python_sources(folder: str) -> str:
    return "\n".join(path.read_text() for path in (REPO / folder).rglob("*.py"))


def test_prometheus_config_is_valid() -> None:
    result = subprocess.run(
        [_promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_alert_rules_are_valid() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", "alerts.test.yml"],
        capture_output=True,
        text=True,
        cwd=PROMETHEUS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    names = {rule["alert"] for rule in _rules()}
    assert len(names) == len(_rules()), "two rules share an alert name"
    firing = {case["alertname"] for case in _alert_tests() if case.get("exp_alerts")}
    silent = {case["alertname"] for case in _alert_tests() if not case.get("exp_alerts")}
    assert names - firing == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a not-firing test"
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"


def test_every_alert_has_severity_summary_and_a_runbook_section() -> None:
    runbook = OPERATIONS.read_text()
    headings = set(re.findall(r"^### (\w+)$", runbook, flags=re.MULTILINE))
    for rule in _rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name in headings, f"docs/operations.md has no '### {name}' triage section"


def test_the_required_incidents_are_covered() -> None:
    expressions = " ".join(rule["expr"] for rule in _rules())
    for needle in (
        'status=~"5.."',  # error rate
        "histogram_quantile(0.95",  # p95 latency
        'status="429"',  # 429 spikes
        "setu_oauth_tokens_total",  # token endpoint failures
        "setu_db_pool_checked_out",  # pool saturation
        'component="redis"',  # redis unreachable
        'component="serving"',  # serving unreachable
        "setu_serving_circuit_open",  # breaker open
        "ray_serve_deployment_replica_healthy",  # replicas unhealthy
        "ray_serve_deployment_queued_queries",  # queue length
        "ray_setu_ml_queue_wait_seconds_bucket",  # batch wait (our batcher: serving/batching.py)
        "ray_node_gram_used",  # GPU memory
        'setu_jobs_backlog{status="queued"}',  # job backlog
        'setu_jobs_total{outcome="failed"}',  # failed jobs
    ):
        assert needle in expressions, f"no alert rule uses {needle}"


def test_every_metric_in_rules_and_dashboards_is_one_we_or_ray_emit() -> None:
    api_code, serving_metrics = _python_sources("api"), (REPO / "serving/metrics.py").read_text()
    named: dict[str, set[str]] = {}
    for rule in _rules():
        for metric in _metric_names(rule["expr"]):
            named.setdefault(metric, set()).add(f"alert {rule['alert']}")
    for dashboard, expressions in _dashboard_queries().items():
        for expression in expressions:
            for metric in _metric_names(expression):
                named.setdefault(metric, set()).add(dashboard)
    assert named, "no metric found in rules or dashboards"
    for metric, users in sorted(named.items()):
        base = re.sub(r"_(bucket|count|sum)$", "", metric)
        if metric == "up":
            continue  # recorded by Prometheus for every target
        if metric.startswith("setu_"):
            assert f'"{base}"' in api_code, f"{metric} ({users}) is not defined in api/"
        elif metric.startswith("ray_setu_"):
            own = re.sub(r"_total$", "", base.removeprefix("ray_"))
            assert f'"{own}"' in serving_metrics, f"{metric} ({users}) is not defined in serving/metrics.py"
        else:
            assert metric in RAY_FAMILIES | RAY_GPU_FAMILIES, f"{metric} ({users}) is not a known Ray family"


def test_alertmanager_config_is_valid_and_inhibits_real_alerts(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is missing: `make promtool` installs Debian's prometheus-alertmanager package")
    text = (DOCKER / "alertmanager/alertmanager.yml").read_text()
    # Debian's amtool (0.25) predates webhook `url_file`, which the pinned Alertmanager image reads; check
    # everything else with the same receiver given inline.
    assert "url_file: /run/secrets/alert_webhook_url" in text
    checked = tmp_path / "alertmanager.yml"
    checked.write_text(
        text.replace("url_file: /run/secrets/alert_webhook_url", "url: https://alerts.invalid/")
    )
    result = subprocess.run(
        [amtool, "check-config", str(checked)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = {rule["alert"] for rule in _rules()}
    for rule in yaml.safe_load(text)["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            if matcher.startswith("alertname"):
                pattern = matcher.split("=", 1)[1].lstrip("~").strip('"')
                assert any(re.fullmatch(pattern, name) for name in names), f"{matcher} matches no alert"


def test_dashboards_are_valid_and_use_provisioned_datasources() -> None:
    provisioned = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/datasources.yml").read_text())
    datasource_uids = {source["uid"] for source in provisioned["datasources"]}
    titles = {"api-overview.json", "app-usage.json", "serving.json"}
    assert {path.name for path in DASHBOARDS} == titles
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        panels = _panels(dashboard["panels"])
        assert len({panel["id"] for panel in panels}) == len(panels), f"{path.name}: duplicate panel ids"
        for panel in panels:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] in datasource_uids, f"{path.name}: {panel['title']}"
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
    assert len(uids) == len(DASHBOARDS)


@pytest.mark.parametrize("stack", sorted(COMPOSE_FILES))
def test_compose_mounts_the_provisioning_and_the_dashboards(stack: str) -> None:
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    grafana = yaml.safe_load(COMPOSE_FILES[stack].read_text())["services"]["grafana"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"]}
    assert mounts["./grafana/dashboards"] == dashboards_path
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    prometheus = yaml.safe_load(COMPOSE_FILES[stack].read_text())["services"]["prometheus"]
    assert any(volume.startswith("./prometheus:/etc/prometheus") for volume in prometheus["volumes"])


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query (Grafana's $__rate_interval as 5m) as a recording rule."""
    rules = [
        {"record": f"setu:dashboard_query_{index}", "expr": expression.replace("$__rate_interval", "5m")}
        for index, expression in enumerate(
            expression for expressions in _dashboard_queries().values() for expression in expressions
        )
    ]
    assert len(rules) >= 30
    checked = tmp_path / "dashboard-queries.yml"
    checked.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(checked)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_name_only_jobs_that_prometheus_scrapes() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    named = {job for rule in _rules() for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert named, "no rule selects a job"
    assert named <= jobs, f"rules select jobs Prometheus does not scrape: {named - jobs}"
