"""The full OpenAPI spec and the GPT Actions schema: valid, within GPT limits, generated from the code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from openapi_spec_validator import validate

from api.app import create_app
from api.lib.settings import Settings
from api.openapi.gpt import GptSchemaError, build_gpt_schema, check_gpt_limits, operations
from api.openapi.postman import build_collection

ROOT = Path(__file__).resolve().parents[2]
SETU = str(Path(sys.executable).with_name("setu"))
PUBLISHED = ROOT / "docs" / "openapi" / "gpt-actions.json"
EXAMPLE_SERVER = "https://shikshasetu.example.org"


@pytest.fixture(scope="module")
async def public_client(settings: Settings) -> Any:
    app = create_app(settings.model_copy(update={"public_url": EXAMPLE_SERVER}))
    async with AsyncTestClient(app=app) as client:
        yield client


async def test_the_full_spec_is_valid_openapi_3_1(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    assert "/oauth/token" in spec["paths"] and "/api/v1/admin/apps" in spec["paths"]


async def test_the_gpt_schema_is_valid_and_within_every_gpt_limit(
    public_client: AsyncTestClient[Litestar],
) -> None:
    response = await public_client.get("/gpt/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    check_gpt_limits(document)
    assert document["servers"] == [{"url": EXAMPLE_SERVER}]
    flow = document["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == f"{EXAMPLE_SERVER}/oauth/authorize"
    assert flow["tokenUrl"] == f"{EXAMPLE_SERVER}/oauth/token"
    assert "admin" not in flow["scopes"]
    ops = operations(document)
    assert 10 <= len(ops) <= 30
    assert not [path for path, _, _ in ops if "/admin" in path or not path.startswith("/api/v1/")]
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids))
    assert {"searchStandards", "getStandard", "createMemory", "searchMemories", "simplifyText"} <= set(ids)
    for _, method, op in ops:
        assert op["security"] and all(set(req) == {"oauth2"} for req in op["security"])
        assert len(op["summary"]) <= 300
        assert all(len(p.get("description", "")) <= 700 for p in op.get("parameters", []))
        assert (method == "get") == ("x-openai-isConsequential" not in op)
    assert [op["x-openai-isConsequential"] for _, m, op in ops if m == "delete"] == [True]


PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}


def _error_statuses(document: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path, method, operation in operations(document):
        responses = operation["responses"]
        found[operation["operationId"]] = {code for code in responses if code >= "400"}
        for code, response in responses.items():
            if code < "400" or (path.startswith("/oauth/") and code in {"400", "401", "429"}):
                continue  # successes; OAuth's own RFC 6749 error bodies
            if path == "/ready" and code == "503":
                continue  # the readiness report itself
            assert response["content"] == PROBLEM, f"{method} {path} {code}"
            assert response["description"], f"{method} {path} {code}"
    return found


async def test_every_operation_documents_the_errors_it_can_answer(client: AsyncTestClient[Litestar]) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    assert set(spec["components"]["schemas"]["ProblemDetails"]["required"]) == {
        "title",
        "status",
        "detail",
        "instance",
    }
    statuses = _error_statuses(spec)
    for path, method, operation in operations(spec):
        codes = statuses[operation["operationId"]]
        assert "422" in codes, path  # text with a NUL byte is refused on every route (headers included)
        if path.startswith("/api/v1/"):
            assert {"401", "403", "422", "429", "503"} <= codes, (method, path, codes)
        if "{" in path:
            assert "404" in codes, (method, path)
        if method in {"post", "patch", "put"}:
            assert {"400", "413", "422"} <= codes, (method, path)
        assert "500" not in codes
    assert "409" in statuses["createUser"] and "502" in statuses["simplifyText"]
    assert "404" in statuses["listChapters"] and "503" not in statuses["getHealth"]


async def test_the_gpt_schema_documents_the_same_errors(public_client: AsyncTestClient[Litestar]) -> None:
    document = (await public_client.get("/gpt/openapi.json")).json()
    assert "ProblemDetails" in document["components"]["schemas"]
    for operation_id, codes in _error_statuses(document).items():
        assert {"401", "403", "422", "429", "503"} <= codes, operation_id


async def test_the_gpt_schema_needs_an_https_server(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/gpt/openapi.json")  # the test app's public URL is http
    assert response.status_code == 503
    assert "SETU_PUBLIC_URL" in response.json()["detail"]
    with pytest.raises(GptSchemaError, match="https"):
        build_gpt_schema(client.app, "http://example.org")


def test_limit_checks_catch_what_the_gpt_editor_refuses() -> None:
    operation = {"operationId": "getThing", "summary": "x" * 301}
    document = {
        "servers": [{"url": "http://x"}],
        "paths": {"/a": {"get": operation, "post": dict(operation)}},
    }
    with pytest.raises(GptSchemaError) as caught:
        check_gpt_limits(document)
    message = str(caught.value)
    assert "not absolute https" in message and "301 characters" in message
    assert "used twice" in message and "x-openai-isConsequential" in message


async def test_the_docs_viewer_is_served(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "/schema/openapi.json" in response.text


def test_the_published_gpt_schema_is_what_the_code_generates() -> None:
    result = subprocess.run(
        [SETU, "docs", "gpt-actions", "--server-url", EXAMPLE_SERVER],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == json.loads(PUBLISHED.read_text()), (
        f"{PUBLISHED} is stale: run `setu docs gpt-actions --server-url {EXAMPLE_SERVER} -o {PUBLISHED}`"
    )


def test_setu_docs_writes_redoc_and_postman(tmp_path: Path) -> None:
    subprocess.run([SETU, "docs", "html", "-o", str(tmp_path / "api.html")], check=True, capture_output=True)
    assert "Redoc.init(" in (tmp_path / "api.html").read_text()
    subprocess.run(
        [SETU, "docs", "postman", "-o", str(tmp_path / "postman.json")], check=True, capture_output=True
    )
    collection = json.loads((tmp_path / "postman.json").read_text())
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    auth = {item["key"]: item["value"] for item in collection["auth"]["oauth2"]}
    assert auth["grant_type"] == "authorization_code"
    assert auth["accessTokenUrl"] == "{{baseUrl}}/oauth/token"
    names = {folder["name"] for folder in collection["item"]}
    assert {"curriculum", "memories", "content"} <= names


def test_postman_paths_use_postman_variables() -> None:
    spec = {
        "info": {"title": "t"},
        "paths": {"/api/v1/memories/{memory_id}": {"get": {"operationId": "getMemory"}}},
    }
    request = build_collection(spec, "http://h")["item"][0]["item"][0]["request"]
    assert request["url"]["raw"] == "{{baseUrl}}/api/v1/memories/:memory_id"
    assert request["url"]["variable"] == [{"key": "memory_id", "value": ""}]


async def test_the_spec_states_what_the_server_enforces(client: AsyncTestClient[Litestar]) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert schemas["MemoryCreate"]["additionalProperties"] is False  # forbid_unknown_fields
    tag = schemas["MemorySearch"]["properties"]["tags"]["items"]
    assert tag["minLength"] == 1 and tag["maxLength"] == 64  # list items keep their constraints
    form = spec["paths"]["/oauth/token"]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]
    assert form["schema"]["required"] == ["grant_type"]
    assert "content" not in spec["paths"]["/oauth/revoke"]["post"]["responses"]["200"]  # an empty body


async def test_options_lists_every_method_of_a_path(
    client: AsyncTestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    response = await client.options("/api/v1/memories", headers=admin_headers)
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, POST"
    response = await client.options(
        "/api/v1/admin/apps/00000000-0000-0000-0000-000000000000", headers=admin_headers
    )
    assert response.headers["allow"] == "DELETE, GET, OPTIONS, PATCH"
