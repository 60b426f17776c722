"""Schemathesis over the whole `/schema/openapi.json` of a real uvicorn server, with real tokens.

Every check, positive and negative data, the examples, coverage and fuzzing phases per operation, then a
stateful run over the links Schemathesis infers (create a memory, then read, list and delete it...). A fixed
seed keeps it deterministic. A 500, an undocumented status, a body that breaks its schema, a negative case
that is accepted or a positive one that is refused: each fails the test.

The server has a database and a Valkey of its own (the fuzzer writes odd users, apps and memories), the NCERT
curriculum text, and no ML tier: ML-backed operations answer their documented 503. Tokens: an admin for
`/api/v1/admin` (a hook keeps it from suspending or deleting the apps and users behind the tokens), a
student (user token) for memories and jobs, an app token (client credentials) for the curriculum and
content tools, a confidential client's Basic credentials for the token, revocation and introspection
endpoints. Rules the schema cannot state are listed in `BUSINESS_RULES` (their 422 is
a valid answer to schema-valid data). `SETU_SCHEMATHESIS_EXAMPLES` sets the examples per operation (25).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from api.app import create_app
from api.curriculum.loader import load_curriculum
from api.lib.migrate import upgrade_database
from api.lib.settings import Settings
from tests.utils.oauth import issue_test_token, register_test_app
from tests.utils.servers import embedded_postgres_server, embedded_valkey_server, free_port

SEED = 20261201
EXAMPLES = int(os.environ.get("SETU_SCHEMATHESIS_EXAMPLES", "25"))
UNLIMITED = 1_000_000  # requests per minute: the fuzzer must not meet the rate limiter


@dataclass(frozen=True)
class FuzzTarget:
    base_url: str
    settings: Settings
    tokens: dict[str, str]
    protected: set[str]
    """The apps and users behind the tokens, which the fuzzer must not suspend or delete."""


@pytest.fixture(scope="module")
def private_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with embedded_postgres_server() as database_url, embedded_valkey_server() as (redis_url, _pid):
        upgrade_database(database_url)
        port = free_port()
        yield Settings(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            env="test",
            worker_embedded=False,
            data_dir=tmp_path_factory.mktemp("fuzz-data"),
            log_json=True,
            public_url=f"http://127.0.0.1:{port}",
            port=port,
        )


@pytest.fixture(scope="module")
async def fuzz_target(private_servers: Settings) -> AsyncIterator[FuzzTarget]:
    settings = private_servers
    engine = create_async_engine(settings.async_database_url)
    await load_curriculum(async_sessionmaker(engine, expire_on_commit=False), None)  # text, no vectors
    await engine.dispose()
    limits = {"rate_limit_per_minute": UNLIMITED, "user_rate_limit_per_minute": UNLIMITED}
    admin = await issue_test_token(settings, role="admin", **limits)
    user = await issue_test_token(settings, role="student", **limits)
    app = await issue_test_token(settings, client_credentials=True, **limits)
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=settings.port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.05)
    tokens = {"admin": admin.access_token, "user": user.access_token, "app": app.access_token}
    client, secret = await register_test_app(settings, grant_types=["client_credentials"])
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    tokens["basic"] = basic
    protected = {str(token.app_id) for token in (admin, user, app)} | {str(client.id)}
    protected |= {str(token.user_id) for token in (admin, user) if token.user_id}
    yield FuzzTarget(f"http://127.0.0.1:{settings.port}", settings, tokens, protected)
    server.should_exit = True
    thread.join(timeout=15)


# Rules the schema cannot state, each a documented 422: an opaque cursor must be one the API returned,
# exactly one of `text`/`code`, grant and redirect-URI combinations, a positive `since` span, a different
# target language, a reused Idempotency-Key, metadata over 4 KB; and OAuth's own 400 (`invalid_grant` for
# a code or refresh token that was never issued).
BUSINESS_RULES = (
    "^(searchStandards|listMemories|generateQuestions|translateText|createApp|updateApp|getAppStats"
    "|resetAppSecret|createMemory|createUser|issueToken|revokeToken|introspectToken)$"
)


DESTRUCTIVE = {
    "deleteApp",
    "updateApp",
    "suspendApp",
    "resumeApp",
    "resetAppSecret",
    "deleteUser",
    "updateUser",
}
HOOKS = """
import uuid

import schemathesis

DESTRUCTIVE = {destructive!r}
PROTECTED = {protected!r}


@schemathesis.hook
def before_call(context, case, kwargs):
    # Links from listApps/listUsers would suspend or delete the apps and users behind our tokens.
    if case.operation.definition.raw.get("operationId") in DESTRUCTIVE:
        for name, value in (case.path_parameters or {{}}).items():
            if str(value) in PROTECTED:
                case.path_parameters[name] = str(uuid.uuid4())  # an id nobody has: a documented 404
"""


def _config_file(target: FuzzTarget, path: Path) -> Path:
    """schemathesis.toml: which token each group of operations gets, and what counts as a server error."""
    groups = [
        ("^/api/v1/admin/", "admin"),
        ("^/api/v1/(memories|jobs)", "user"),
        ("^/api/v1/(curriculum|content)/", "app"),
        ("^/oauth/(token|introspect|revoke)$", "basic"),  # a confidential client's own credentials
    ]
    lines = [
        f'base-url = "{target.base_url}"',
        "",
        "[generation]",
        "allow-x00 = true",
        "",
        "# 502 and 503 are documented answers (no ML tier here); any other 5xx fails.",
        "[checks.not_a_server_error]",
        'expected-statuses = ["2XX", "3XX", "4XX", "502", "503"]',
        "",
        "[[operations]]",
        f'include-operation-id-regex = "{BUSINESS_RULES}"',
        'checks.positive_data_acceptance.expected-statuses = ["2XX", "3XX", "400", "401", "403", "404", '
        '"409", "422", "429", "502", "503"]',
        "",
    ]
    lines += []
    for regex, name in groups:
        scheme = "Basic" if name == "basic" else "Bearer"
        lines += [
            "[[operations]]",
            f'include-path-regex = "{regex}"',
            f'headers = {{ Authorization = "{scheme} {target.tokens[name]}" }}',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def run_schemathesis(
    target: FuzzTarget, workdir: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`st run` over the whole spec, every check and phase, both modes, a fixed seed; the JSON report."""
    reports = workdir / "reports"
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(_config_file(target, workdir / "schemathesis.toml")),
        "run",
        f"{target.base_url}/schema/openapi.json",
        "--checks=all",
        "--mode=all",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--seed={SEED}",
        f"--max-examples={EXAMPLES}",
        "--workers=1",
        "--generation-database=none",  # no examples carried over from earlier runs
        "--report=json,junit",
        f"--report-dir={reports}",
        "--no-color",
    ]
    (workdir / "setu_fuzz_hooks.py").write_text(
        HOOKS.format(destructive=sorted(DESTRUCTIVE), protected=sorted(target.protected))
    )
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "setu_fuzz_hooks", "PYTHONPATH": str(workdir)}
    result = subprocess.run(  # in workdir: st keeps a cache folder where it runs
        command, capture_output=True, text=True, timeout=900, check=False, env=env, cwd=workdir
    )
    (workdir / "output.txt").write_text(result.stdout + result.stderr)
    if os.environ.get("SETU_SCHEMATHESIS_OUTPUT"):
        Path(os.environ["SETU_SCHEMATHESIS_OUTPUT"]).write_text(result.stdout + result.stderr)
    report_files = sorted(reports.glob("*.json"))
    report = json.loads(report_files[0].read_text()) if report_files else {}
    return result, report


def test_schemathesis_finds_nothing(fuzz_target: FuzzTarget, tmp_path: Path) -> None:
    result, report = run_schemathesis(fuzz_target, tmp_path)
    cases = report.get("test_cases", {})
    print(
        f"\nschemathesis: {report.get('operations', {}).get('tested')} operations, "
        f"{cases.get('generated')} cases, {cases.get('unique_failures')} failures, "
        f"{report.get('running_time', 0):.0f} s"
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
    assert report["complete"] and report["operations"]["tested"] == report["operations"]["total"]
    assert cases["unique_failures"] == 0 and cases["errored"] == 0
    assert cases["generated"] >= 20 * report["operations"]["total"], cases  # it reached every operation
