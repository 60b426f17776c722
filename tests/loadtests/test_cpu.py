"""CPU accounting of process trees, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.cpu import cpu_seconds, describe, used_between

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")


def test_a_tree_counts_its_descendants_and_what_it_reaped() -> None:
    busy = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"
    mine_before = cpu_seconds({"me": os.getpid()})["me"]
    parent = subprocess.Popen(  # an idle parent whose child burns 1 s of CPU
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])"]
    )
    seen = 0.0
    while parent.poll() is None:
        seen = max(seen, cpu_seconds({"tree": parent.pid}).get("tree", 0.0))
        time.sleep(0.05)
    assert seen >= 0.5  # the running grandchild counted in the parent's tree
    mine_after = cpu_seconds({"me": os.getpid()})["me"]
    assert mine_after - mine_before >= 1.0  # all of it in ours once we reaped the parent


def test_used_between_and_describe_report_per_request_costs() -> None:
    before = cpu_seconds({"me": os.getpid(), "gone": 2**22 + 7})
    assert "gone" not in before  # a PID that does not exist is left out
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    used = used_between(before, cpu_seconds({"me": os.getpid()}))
    assert used["me"] >= 0.04
    text = describe({"api": 2.0}, requests=1000, seconds=10.0)
    assert "2.00 ms/request" in text and "20% of a core" in text


def test_a_part_inside_another_parts_tree_counts_only_in_its_own() -> None:
    """`setu up` starts Valkey and Ray as its children: each is a part of its own, not the API's."""
    busy = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"
    busy += "time.sleep(5)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])"]
    )
    try:
        child = None
        deadline = time.monotonic() + 10
        while child is None and time.monotonic() < deadline:
            found = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
            child = int(found[0]) if found else None
            time.sleep(0.05)
        assert child is not None
        while cpu_seconds({"child": child}).get("child", 0.0) < 0.9 and time.monotonic() < deadline + 20:
            time.sleep(0.05)  # the child burns its second of CPU, then sleeps
        both = cpu_seconds({"parent": parent.pid, "child": child})
        assert both["child"] >= 0.5 and both["parent"] < 0.5
        assert cpu_seconds({"parent": parent.pid})["parent"] >= 0.5  # alone, the tree includes it
    finally:
        parent.kill()
        parent.wait()
