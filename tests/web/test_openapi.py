"""The OpenAPI document describes exactly the app's /api routes."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from tests.web.conftest import bearer

_ARG = re.compile(r"<(?:[^:>]+:)?([a-z_]+)>")
_PARAM_NAMES = {"container_id": "id"}  # the document's name for a path parameter


def _openapi_path(rule: str) -> str:
    return _ARG.sub(lambda m: "{" + _PARAM_NAMES.get(m.group(1), m.group(1)) + "}", rule)


def _routes(app: Flask) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            methods = {m.lower() for m in (rule.methods or set())} - {"head", "options"}
            routes.setdefault(_openapi_path(rule.rule), set()).update(methods)
    return routes


def test_document_matches_the_routes(app: Flask, client: FlaskClient, token: str) -> None:
    response = client.get("/api/openapi.json", headers=bearer(token))
    assert response.status_code == 200
    doc = response.json
    assert doc["openapi"].startswith("3.")
    documented = {
        path: {m for m in item if m in ("get", "post", "put", "patch", "delete")}
        for path, item in doc["paths"].items()
    }
    assert documented == _routes(app)


def test_document_is_well_formed(client: FlaskClient, token: str) -> None:
    doc = client.get("/api/openapi.json", headers=bearer(token)).json
    schemas = doc["components"]["schemas"]
    responses = doc["components"]["responses"]
    text = str(doc)
    for ref in re.findall(r"#/components/schemas/(\w+)", text):
        assert ref in schemas, ref
    for ref in re.findall(r"#/components/responses/(\w+)", text):
        assert ref in responses, ref
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert names == declared, path
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["responses"] and op["summary"], (path, method)
            assert any(code.startswith("2") for code in op["responses"]), (path, method)


def test_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

    from web.openapi import DOCUMENT

    validate(DOCUMENT, cls=OpenAPIV31SpecValidator)  # raises on any violation


def test_answers_are_held_to_the_document() -> None:
    """The check every web test's client applies (tests/web/openapi_check.py)."""
    from tests.web.openapi_check import problem

    node = {"name": "n", "host": "h", "port": 8006, "pve_node": "pve", "auth": "token",
            "user": "root@pam", "token_id": "root@pam!x", "ca_file": None, "fingerprint": None,
            "insecure": False, "default_storage": None, "default_bridge": None,
            "cluster": None, "maintenance": False, "max_containers": None,
            "created_at": "2026-12-02T00:00:00+00:00", "containers": 0}  # fmt: skip
    assert problem("GET", "/api/nodes", 200, "application/json", {"nodes": [node]}) is None
    assert problem("GET", "/api/nodes", 200, "application/json",
                   {"nodes": [{**node, "secret": "x"}]}) == (
        "GET /api/nodes 200: nodes/0: Additional properties are not allowed ('secret' was "
        "unexpected)")  # fmt: skip
    assert problem("GET", "/api/nodes/n", 418, "application/json", {"error": "x"}) == (
        "GET /api/nodes/{name}: status 418 is not documented"
    )
    assert problem("GET", "/api/nodes/n", 404, "text/html", None) == (
        "GET /api/nodes/n 404: text/html, not JSON"
    )
    assert problem("DELETE", "/api/nodes/n", 204, "", None, has_body=False) is None
    assert problem("DELETE", "/api/nodes/n", 204, "text/plain", None) == (
        "DELETE /api/nodes/{name} 204: a body where none is documented"
    )
    # an error says only what the document lists: every field error, each with its field
    errors = {"error": "cores must be an integer", "field": "cores",
              "errors": [{"field": "cores", "message": "cores must be an integer"},
                         {"field": "ip", "message": "ip must be 'dhcp' or ..."}]}  # fmt: skip
    assert problem("POST", "/api/containers", 400, "application/json", errors) is None
    assert problem("POST", "/api/containers", 400, "application/json",
                   {**errors, "errors": [{"field": "cores"}]}) == (
        "POST /api/containers 400: errors/0: 'message' is a required property")  # fmt: skip
    assert problem("POST", "/api/containers", 400, "application/json",
                   {**errors, "hint": "x"}) == (
        "POST /api/containers 400: (body): Additional properties are not allowed ('hint' was "
        "unexpected)")  # fmt: skip
