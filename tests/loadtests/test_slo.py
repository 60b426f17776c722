"""The SLO file and gate logic, on statistics shaped like locust's: what passes, what fails and why."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from loadtests.slo import (
    DEFAULT_SLO,
    OperationStats,
    SloFileError,
    evaluate,
    gate,
    load_slo,
    read_stats,
)

# Locust's stats CSV header (locust 2.x), the columns read_stats relies on included.
HEADER = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
    "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
    "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%",
]  # fmt: skip


def _row(method: str, name: str, requests: int, failures: int, p50: str, p95: str, p99: str) -> list[str]:
    return [method, name, str(requests), str(failures), p50, "1", "1", p99, "10", f"{requests / 10:.1f}",
            f"{failures / 10:.1f}", p50, p50, p50, p50, p95, p95, p99, p99, p99, p99, p99]  # fmt: skip


def _stats(tmp_path: Path, rows: list[list[str]]) -> Path:
    path = tmp_path / "run_stats.csv"
    total_requests = sum(int(row[2]) for row in rows)
    total_failures = sum(int(row[3]) for row in rows)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        writer.writerows(rows)
        writer.writerow(_row("", "Aggregated", total_requests, total_failures, "5", "20", "40"))
    return path


def _slo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "slo.toml"
    path.write_text(text)
    return path


def test_the_shipped_slo_file_is_valid_and_gates_the_gpt_mix() -> None:
    config = load_slo(DEFAULT_SLO)
    assert config.total.max_error_rate == 0.0
    for operation in ("searchStandards", "getStandard", "createMemory", "searchMemories", "listMemories"):
        assert config.objective(operation).p95_ms == 50


def test_a_run_within_every_objective_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = _stats(tmp_path, [_row("GET", "getStandard", 1000, 0, "4", "12", "30")])
    slo = _slo(tmp_path, "[total]\nmax_error_rate = 0\n[operations.getStandard]\np95_ms = 50\np99_ms = 100\n")
    assert gate(stats, slo) == 0
    out = capsys.readouterr().out
    assert "SLO met" in out
    assert "getStandard" in out.splitlines()[2]  # the summary table names the operation


def test_a_missed_latency_objective_fails_and_names_the_operation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = _stats(
        tmp_path,
        [
            _row("GET", "getStandard", 1000, 0, "4", "12", "30"),
            _row("GET", "searchStandards", 500, 0, "9", "80", "95"),
        ],
    )
    slo = _slo(tmp_path, "[defaults]\np95_ms = 50\n[operations.getStandard]\np99_ms = 20\n")
    assert gate(stats, slo) == 1
    out = capsys.readouterr().out
    assert "SLO FAILED" in out
    assert "searchStandards: p95 80 ms > 50 ms" in out
    assert "getStandard: p99 30 ms > 20 ms" in out


def test_errors_beyond_the_allowed_rate_fail_per_operation_and_in_total(tmp_path: Path) -> None:
    rows, total = read_stats(
        _stats(
            tmp_path,
            [
                _row("POST", "createMemory", 200, 3, "5", "9", "12"),
                _row("GET", "getStandard", 800, 0, "4", "8", "9"),
            ],
        )
    )
    config = load_slo(_slo(tmp_path, "[total]\nmax_error_rate = 0.001\n[defaults]\nmax_error_rate = 0.01\n"))
    violations, _ = evaluate(config, rows, total)
    assert [(v.operation, v.measure) for v in violations] == [
        ("createMemory", "error rate"),
        ("total", "error rate"),
    ]
    assert str(violations[0]) == "createMemory: error rate 1.50% > 1.00%"


def test_throughput_below_min_rps_fails(tmp_path: Path) -> None:
    rows, total = read_stats(_stats(tmp_path, [_row("GET", "getStandard", 1000, 0, "4", "8", "9")]))
    config = load_slo(_slo(tmp_path, "[total]\nmin_rps = 1000\n"))
    violations, _ = evaluate(config, rows, total)
    assert [(v.operation, v.measure, v.measured) for v in violations] == [("total", "requests/s", 100.0)]


def test_operations_not_exercised_are_reported_not_failed(tmp_path: Path) -> None:
    rows, total = read_stats(_stats(tmp_path, [_row("GET", "getStandard", 10, 0, "4", "8", "9")]))
    config = load_slo(
        _slo(tmp_path, "[operations.getStandard]\np95_ms = 50\n[operations.createEmbeddings]\np95_ms = 1\n")
    )
    violations, missing = evaluate(config, rows, total)
    assert violations == []
    assert missing == ["createEmbeddings"]


def test_a_run_without_requests_fails(tmp_path: Path) -> None:
    rows, total = read_stats(_stats(tmp_path, []))
    violations, _ = evaluate(load_slo(DEFAULT_SLO), rows, total)
    assert violations and violations[0].operation == "total"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[operations.getStandard]\np95 = 50\n", "unknown keys ['p95']"),
        ("[operations.getStandard]\np95_ms = -1\n", "non-negative number"),
        ("[total]\nmax_error_rate = 5\n", "is a fraction"),
        ("[limits]\np95_ms = 1\n", "unknown tables ['limits']"),
        ("[total\n", "slo.toml"),
    ],
)
def test_a_malformed_slo_file_is_refused_with_the_place(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SloFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_slo(_slo(tmp_path, text))


def test_operation_stats_without_requests_have_no_error_rate() -> None:
    assert OperationStats("x", "GET", 0, 0, 0.0, None, None, None, None).error_rate == 0.0
