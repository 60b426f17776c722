"""CPU time used by each part of a local load test (API, PostgreSQL, Valkey, ML tier, locust), from /proc.

On a shared machine, requests/s depend on what else runs; CPU milliseconds per request do much less, and
tell what a dedicated machine would sustain. Each part is a tree of processes under a root PID; children
that exited and were reaped count too (`cutime`/`cstime`). Linux only: elsewhere the figures are empty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent PID, CPU seconds incl. reaped children) of one process, or None when it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return int(fields[1]), ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds(roots: Mapping[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each named process tree (root PID and its descendants, less the subtrees of
    the other roots)."""
    if not _PROC.is_dir():
        return {}
    table: dict[int, tuple[int, float]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    totals: dict[str, float] = {}
    named = {root for root in roots.values() if root is not None}
    for name, root in roots.items():
        if root is None or root not in table:
            continue
        total, stack = 0.0, [root]
        while stack:
            pid = stack.pop()
            total += table[pid][1]
            # A descendant that is another part's root (Valkey or Ray under `setu up`) counts there only.
            stack.extend(child for child in children.get(pid, ()) if child not in named)
        totals[name] = total
    return totals


def used_between(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each tree used between two `cpu_seconds` readings."""
    return {name: after[name] - before.get(name, 0.0) for name in after}


def describe(used: Mapping[str, float], requests: int, seconds: float) -> str:
    """One line per part: CPU seconds, share of one core, milliseconds per request."""
    if not used:
        return "CPU accounting: not available on this system"
    lines = [f"CPU used during the run ({seconds:.0f} s, {requests} requests):"]
    for name, value in used.items():
        per_request = f"{1000 * value / requests:6.2f} ms/request" if requests else "-"
        lines.append(f"  {name:<10} {value:7.1f} s  {100 * value / seconds:5.0f}% of a core  {per_request}")
    return "\n".join(lines)
