"""The locust suite, run headless for a few seconds against a real server: it authenticates through our
token endpoint and sign-in pages, gets only expected answers, and its statistics feed the SLO gate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from api.app import create_app
from api.curriculum.loader import LoadReport
from api.lib.settings import Settings
from loadtests.run import execute, parse_args
from loadtests.service import AdminCredential
from loadtests.setup import prepare
from loadtests.slo import gate, read_stats
from tests.utils.oauth import TEST_PASSWORD, create_test_user
from tests.utils.servers import free_port


@pytest.fixture(scope="module")
def server_url(settings: Settings, curriculum: LoadReport) -> Iterator[str]:
    """The app under uvicorn on a free port, in a thread with its own event loop."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


async def test_a_short_headless_run_passes_the_gate_and_a_strict_one_fails_it(
    settings: Settings, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.json"
    _, email = await create_test_user(settings, role="admin")  # the only thing made outside the HTTP API
    admin = AdminCredential(email=email, password=TEST_PASSWORD)
    (await asyncio.to_thread(prepare, server_url, admin, 3)).write(data)
    out = tmp_path / "reports"
    out.mkdir()
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("[total]\nmax_error_rate = 0\n[defaults]\np95_ms = 60000\n")
    args = parse_args(
        ["--users", "4", "--duration", "4s", "--classes", "GptUser", "OAuthUser", "--gpt-rate", "20",
         "--oauth-rate", "4", "--exclude-tags", "ml", "--out", str(out), "--slo", str(lenient)]
    )  # fmt: skip
    # No ML tier here: tasks tagged `ml` are skipped; searchStandards falls back to text ranking.
    code = await asyncio.to_thread(execute, args, server_url, None, data)
    report = capsys.readouterr().out
    assert code == 0, report + (out / "locust.out").read_text()
    rows, total = read_stats(out / "run_stats.csv")
    names = {row.name for row in rows}
    assert {"getStandard", "searchStandards", "createMemory", "issueToken:refresh_token"} <= names
    assert total.requests > 20 and total.failures == 0
    assert "SLO met" in report
    assert (out / "report.html").stat().st_size > 0

    strict = tmp_path / "strict.toml"
    strict.write_text("[operations.getStandard]\np95_ms = 0.001\n")
    assert gate(out / "run_stats.csv", strict) == 1
    assert "getStandard: p95" in capsys.readouterr().out
