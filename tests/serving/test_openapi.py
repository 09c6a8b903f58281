"""The published API tells the truth: response and request schemas, the error shape, who may
call what, and documentation pages that work without the internet."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shipyard.app import create_app
from shipyard.core import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(Settings(home="/nonexistent-not-opened"))
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    ]


UNGUARDED = {"/v2", "/v2/health/live", "/v2/health/ready", "/metrics"}


def test_every_operation_says_who_may_call_it(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for method, path, op in _operations(document):
        if path in UNGUARDED:
            assert op["security"] == [], (method, path)
            continue
        assert op["security"] == [{"bearer": []}, {"apiKey": []}], (method, path)
        assert op["x-scopes"], (method, path)
        assert "Needs an API key with scope" in op["description"], (method, path)
    scopes = {(m, p): op["x-scopes"] for m, p, op in _operations(document) if "x-scopes" in op}
    assert scopes[("POST", "/v1/keys")] == ["admin"]
    assert scopes[("POST", "/v1/models/{name}/predict")] == ["predict"]
    assert scopes[("POST", "/v1/feedback")] == ["predict", "write"]
    assert scopes[("DELETE", "/v1/models/{name}")] == ["admin"]
    assert scopes[("POST", "/v1/models/{name}/monitoring")] == ["write"]
    assert scopes[("GET", "/v1/models/{name}/monitoring")] == ["read"]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        return _resolve(document, document["components"]["schemas"][ref.rsplit("/", 1)[1]])
    return schema


def test_every_json_answer_has_a_real_schema(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        for status, response in op["responses"].items():
            content = response.get("content", {})
            if path == "/metrics":
                assert list(content) == ["text/plain"]
                continue
            if path.endswith("report.html") and status == "200":
                assert "text/html" in content
                continue
            schema = _resolve(document, content["application/json"]["schema"])
            assert schema.get("properties") or schema.get("anyOf"), (method, path, status)
            assert schema != {"type": "string"}, (method, path, status)


def test_errors_are_documented_in_their_real_shape(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
    info = document["components"]["schemas"]["ErrorInfo"]
    assert set(info["properties"]) == {"type", "message", "details"}
    for method, path, op in _operations(document):
        if path in UNGUARDED:
            continue
        for status in ("400", "401", "403", "429", "503"):
            assert status in op["responses"], (method, path, status)
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            expected = "V2ErrorResponse" if path.startswith("/v2") else "ErrorResponse"
            assert ref.endswith(f"/{expected}"), (method, path, status)
        assert "422" not in op["responses"] or "HTTPValidationError" not in str(
            op["responses"]["422"]
        )
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", "/v1/keys", "scope"),
        ("POST", "/v1/models/{name}/deployment", "canary"),
        ("PUT", "/v1/models/{name}/aliases/{alias}", "version"),
        ("POST", "/v1/models/{name}/rollback", "reason"),
        ("POST", "/v1/models/{name}/alert-rules", "expression"),
        ("POST", "/v1/models/{name}/predict", "instances"),
        ("POST", "/v2/models/{name}/infer", "inputs"),
    ],
)
def test_request_bodies_are_documented(
    document: dict[str, Any], method: str, path: str, field: str
) -> None:
    body = document["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]
    schema = _resolve(document, body["schema"])
    variants = [_resolve(document, s) for s in schema.get("anyOf", [schema])]
    assert any(field in v.get("properties", {}) for v in variants), schema


def test_feedback_documents_each_shape_it_takes(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]
    assert len(body["schema"]["anyOf"]) == 3


def test_the_docs_pages_load_their_assets_from_the_server_not_a_cdn(
    sqlite_settings: Settings,
) -> None:
    with TestClient(create_app(sqlite_settings)) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert not re.findall(r"https?://", html), page
            for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', html):
                answer = client.get(asset)
                assert answer.status_code == 200, asset
                assert len(answer.content) > 1000, asset
        script = client.get("/docs/assets/swagger-ui-bundle.js")
        assert "javascript" in script.headers["content-type"]
        assert client.get("/redoc").text.count("/docs/assets/redoc.standalone.js") == 1
