"""The SLO gate: read locust's `<prefix>_stats.csv`, print a summary table, check it against `slo.toml`.

`python -m loadtests.slo reports/loadtest/run_stats.csv [--slo loadtests/slo.toml]` exits 1 and names each
operation that missed an objective, 0 when all are met.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SLO = Path(__file__).with_name("slo.toml")
TOTAL = "Aggregated"
"""Locust's name for the row over all requests (and ours for the `[total]` table)."""


@dataclass(frozen=True)
class Objective:
    """Limits for one operation (or the total); None means not gated."""

    p95_ms: float | None = None
    p99_ms: float | None = None
    max_error_rate: float | None = None
    min_rps: float | None = None


@dataclass(frozen=True)
class SloConfig:
    total: Objective
    defaults: Objective
    operations: dict[str, Objective] = field(default_factory=dict)

    def objective(self, name: str) -> Objective:
        """The operation's own limits, with `[defaults]` filling what it leaves out."""
        own = self.operations.get(name, Objective())
        return Objective(
            p95_ms=own.p95_ms if own.p95_ms is not None else self.defaults.p95_ms,
            p99_ms=own.p99_ms if own.p99_ms is not None else self.defaults.p99_ms,
            max_error_rate=own.max_error_rate
            if own.max_error_rate is not None
            else self.defaults.max_error_rate,
            min_rps=own.min_rps,
        )


@dataclass(frozen=True)
class OperationStats:
    """One row of locust's stats CSV."""

    name: str
    method: str
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Violation:
    operation: str
    measure: str
    measured: float
    limit: float

    def __str__(self) -> str:
        if self.measure == "error rate":
            return f"{self.operation}: error rate {self.measured:.2%} > {self.limit:.2%}"
        if self.measure == "requests/s":
            return f"{self.operation}: {self.measured:g} requests/s < {self.limit:g}"
        return f"{self.operation}: {self.measure} {self.measured:g} ms > {self.limit:g} ms"


class SloFileError(ValueError):
    """The SLO file is malformed; the message says where."""


_KEYS = {"p95_ms", "p99_ms", "max_error_rate", "min_rps"}


def _objective(table: object, where: str) -> Objective:
    if not isinstance(table, dict):
        raise SloFileError(f"{where} must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise SloFileError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    values: dict[str, float] = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SloFileError(f"{where}.{key} must be a non-negative number, got {value!r}")
        if key == "max_error_rate" and value > 1:
            raise SloFileError(f"{where}.max_error_rate is a fraction (0.01 = 1 %), got {value!r}")
        values[key] = float(value)
    return Objective(**values)


def load_slo(path: Path) -> SloConfig:
    """Parse and validate an SLO file."""
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SloFileError(f"{path}: {error}") from None
    unknown = set(document) - {"total", "defaults", "operations"}
    if unknown:
        raise SloFileError(f"{path}: unknown tables {sorted(unknown)} (known: total, defaults, operations)")
    operations = document.get("operations", {})
    if not isinstance(operations, dict):
        raise SloFileError(f"{path}: [operations] must be a table of tables")
    return SloConfig(
        total=_objective(document.get("total", {}), "[total]"),
        defaults=_objective(document.get("defaults", {}), "[defaults]"),
        operations={name: _objective(table, f"[operations.{name}]") for name, table in operations.items()},
    )


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None  # locust writes N/A for an operation without requests
    return None if math.isnan(number) else number


def read_stats(path: Path) -> tuple[list[OperationStats], OperationStats]:
    """Locust's `<prefix>_stats.csv`: the per-operation rows and the total row."""
    rows: list[OperationStats] = []
    total: OperationStats | None = None
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            stats = OperationStats(
                name=row["Name"],
                method=row["Type"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=_number(row["Requests/s"]) or 0.0,
                p50_ms=_number(row["50%"]),
                p95_ms=_number(row["95%"]),
                p99_ms=_number(row["99%"]),
                max_ms=_number(row["Max Response Time"]),
            )
            if row["Name"] == TOTAL and not row["Type"]:
                total = stats
            else:
                rows.append(stats)
    if total is None:
        raise ValueError(f"{path} has no {TOTAL!r} row: is it a locust stats CSV?")
    return rows, total


def _check(name: str, stats: OperationStats, objective: Objective) -> list[Violation]:
    found = []
    if objective.max_error_rate is not None and stats.error_rate > objective.max_error_rate:
        found.append(Violation(name, "error rate", stats.error_rate, objective.max_error_rate))
    for measure, limit, value in (
        ("p95", objective.p95_ms, stats.p95_ms),
        ("p99", objective.p99_ms, stats.p99_ms),
    ):
        if limit is not None and value is not None and value > limit:
            found.append(Violation(name, measure, value, limit))
    if objective.min_rps is not None and stats.rps < objective.min_rps:
        found.append(Violation(name, "requests/s", round(stats.rps, 1), objective.min_rps))
    return found


def evaluate(
    config: SloConfig, rows: list[OperationStats], total: OperationStats
) -> tuple[list[Violation], list[str]]:
    """Every missed objective, and the operations the SLO file lists that this run did not exercise."""
    violations: list[Violation] = []
    if total.requests == 0:
        violations.append(Violation("total", "requests/s", 0.0, config.total.min_rps or 0.0))
    seen = set()
    for stats in rows:
        seen.add(stats.name)
        if stats.requests:
            violations += _check(stats.name, stats, config.objective(stats.name))
    violations += _check("total", total, config.total)
    missing = sorted(set(config.operations) - seen)
    return violations, missing


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def summary_table(rows: list[OperationStats], total: OperationStats) -> str:
    """A fixed-width table: requests, requests/s, p50/p95/p99/max and errors per operation."""
    header = ("operation", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors")
    lines = [
        (
            stats.name,
            str(stats.requests),
            f"{stats.rps:.1f}",
            _ms(stats.p50_ms),
            _ms(stats.p95_ms),
            _ms(stats.p99_ms),
            _ms(stats.max_ms),
            f"{stats.failures} ({stats.error_rate:.2%})",
        )
        for stats in [*sorted(rows, key=lambda row: -row.requests), total]
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-" * len(render(header))
    return "\n".join([render(header), rule, *(render(line) for line in lines[:-1]), rule, render(lines[-1])])


def gate(stats_csv: Path, slo_path: Path = DEFAULT_SLO) -> int:
    """Print the summary and the verdict; 0 when every objective is met, else 1."""
    config = load_slo(slo_path)
    rows, total = read_stats(stats_csv)
    out = sys.stdout
    out.write(summary_table(rows, total) + "\n\n")
    violations, missing = evaluate(config, rows, total)
    if missing:
        out.write(f"Not exercised in this run (not gated): {', '.join(missing)}\n")
    if violations:
        out.write(f"SLO FAILED ({slo_path}):\n")
        for violation in violations:
            out.write(f"  {violation}\n")
        return 1
    out.write(
        f"SLO met ({slo_path}): {total.requests} requests, {total.rps:.1f} req/s, no objective missed.\n"
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.slo", description=__doc__.split("\n")[0])
    parser.add_argument("stats_csv", type=Path, help="locust's <prefix>_stats.csv")
    parser.add_argument("--slo", type=Path, default=DEFAULT_SLO)
    args = parser.parse_args(argv)
    try:
        raise SystemExit(gate(args.stats_csv, args.slo))
    except (SloFileError, ValueError, OSError) as error:
        sys.stderr.write(f"slo: {error}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
