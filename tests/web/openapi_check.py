"""Every API response the tests provoke, checked against /api/openapi.json.

``CheckedClient`` is the Flask test client of the web tests: each answer to
a ``/api/`` request must have a status the document lists for that path and
method, and a JSON body valid against the schema it gives for that status
(errors included).  A path the document does not know answers with the
Error schema.  So the document is tested against what the real routes send,
in every test that calls them, not against a copy of itself.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from web.openapi import DOCUMENT

_BASE = "urn:lxc-provisioner:openapi"


@cache
def _registry() -> Registry:
    return Registry().with_resource(_BASE, Resource(DOCUMENT, specification=DRAFT202012))


@cache
def _paths() -> list[tuple[re.Pattern[str], str]]:
    """(regex, documented path), the most literal paths first."""
    paths = sorted(DOCUMENT["paths"], key=lambda p: (p.count("{"), -len(p)))
    return [(re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(p)) + "$"), p)
            for p in paths]  # fmt: skip


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _absolute(schema: Any) -> Any:
    """The schema with its "#/..." references pointing into the document."""
    if isinstance(schema, dict):
        return {k: (_BASE + v if k == "$ref" and v.startswith("#") else _absolute(v))
                for k, v in schema.items()}  # fmt: skip
    if isinstance(schema, list):
        return [_absolute(v) for v in schema]
    return schema


def problem(method: str, path: str, status: int, content_type: str, body: Any,
            has_body: bool = True) -> str | None:  # fmt: skip
    """What is wrong with this answer by the document, or None."""
    documented = next((p for rx, p in _paths() if rx.match(path)), None)
    if documented is None:
        schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
        if status < 400:
            return f"{method} {path}: {status} from a path the document does not describe"
    else:
        op = DOCUMENT["paths"][documented].get(method.lower())
        if op is None:
            return None if status in (404, 405) else f"{method} {documented}: not documented"
        answer = op["responses"].get(str(status))
        if answer is None:
            return f"{method} {documented}: status {status} is not documented"
        content = _resolve(answer).get("content")
        if content is None:  # 204
            return f"{method} {documented} {status}: a body where none is documented" if (
                has_body) else None  # fmt: skip
        if "application/json" not in content:
            return None if "application/json" not in content_type else (
                f"{method} {documented} {status}: JSON where the document says "
                f"{', '.join(content)}")  # fmt: skip
        schema = content["application/json"]["schema"]
    if "application/json" not in content_type:
        return f"{method} {path} {status}: {content_type or 'no content type'}, not JSON"
    validator = Draft202012Validator(_absolute(schema), registry=_registry())
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(body)"
        return f"{method} {path} {status}: {where}: {first.message}"
    return None


class CheckedClient(FlaskClient):
    """A test client that holds every /api/ answer to the OpenAPI document."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        request = response.request
        path = request.path
        if path.startswith("/api/") and not (
                path == "/api/openapi.json" or kwargs.get("buffered") is False):  # fmt: skip
            body = response.get_json(silent=True) if response.is_json else None
            found = problem(request.method, path, response.status_code,
                            response.content_type or "", body,
                            has_body=bool(response.get_data()))  # fmt: skip
            assert found is None, found
        return response
