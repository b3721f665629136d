"""The REST API under ``/api``: the blueprint, its errors and input checks.

Every error is JSON ``{"error": "...", "field": "..."}`` (``field`` when an
input is to blame), plus ``"errors": [{"field": ..., "message": ...}, ...]``
with every field error of the request (the first is ``error`` and ``field``).
Input is checked field by field before anything is written, and the
provisioner's own ``ConfigError`` (``"field: message"``) is mapped to the
field it names: user input never causes a 500.  The routes
live in ``api_nodes``, ``api_templates``, ``api_containers``, ``api_changes``,
``api_webhooks`` and ``openapi``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, g, jsonify, request
from redis import exceptions as redis_errors
from sqlalchemy import exc as sa_errors
from werkzeug.exceptions import HTTPException

from provisioner.errors import ConfigError, ProvisionError
from provisioner.request_checks import field_of
from web.auth import current_user, error_response, wants_json
from web.csrf import csrf_token

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the OpenAPI document says it too
_MISSING = object()
T = TypeVar("T")


class ApiError(Exception):
    """An API failure with its status, message and (optionally) the field;
    ``errors`` are every field error of the request when there are several."""

    def __init__(self, status: int, message: str, field: str | None = None, *,
                 errors: list[ApiError] | None = None, **extra: Any) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.errors = errors or ([self] if field else [])
        self.extra = extra

    def response(self) -> Response:
        extra: dict[str, Any] = {}
        if self.field:
            extra["field"] = self.field
            extra["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return error_response(self.status, self.message, **extra, **self.extra)


def json_body() -> dict[str, Any]:
    """The request's JSON object.

    Raises:
        ApiError: no JSON, malformed JSON, or not an object.
    """
    if not request.is_json:
        raise ApiError(415, "send a JSON object with Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # json.loads gives up on deep nesting with this, not ValueError
        raise ApiError(400, "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    where = _unencodable(body, "")
    if where is not None:  # a lone surrogate ("\\ud800"): no database or hash takes it
        raise ApiError(400, f"{where or 'the body'} is not valid Unicode text "
                       "(a lone surrogate escape)", where or None)  # fmt: skip
    return body


def _unencodable(value: object, path: str) -> str | None:
    """The path of the first key or string that is not valid UTF-8 text, if any."""
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return at
        elif isinstance(item, dict):
            for key, child in item.items():
                # the key is popped (and checked) first, so no path carries a bad key;
                # a bad key is blamed on the object that holds it
                stack.extend(((child, f"{at}.{key}" if at else key), (key, at)))
        elif isinstance(item, list):
            stack.extend((child, f"{at}[{i}]") for i, child in enumerate(item))
    return None


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), "null")  # fmt: skip


class Body:
    """Reads a JSON object field by field; every problem names its field.

    A field that fails is recorded (its value reads as None, or the default)
    and reading goes on, so that ``finish()`` refuses the request with every
    problem at once; ``refuse()`` adds a rule's.  ``finish()`` also refuses
    fields nobody asked for, so a typo never passes silently.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.seen: set[str] = set()
        self.errors: list[ApiError] = []

    def refuse(self, field: str, message: str) -> None:
        """Record a problem of ``field``: the first one per field counts (a
        refused field's placeholder value must not be blamed twice), and a
        part of a refused field (``variables.x`` of ``variables``) is refused."""
        if not any(field == e.field or field.startswith(f"{e.field}.") for e in self.errors):
            self.errors.append(ApiError(400, message, field))

    def failed(self, field: str) -> bool:
        """Whether ``field`` (or a part of it, ``variables.x``) was refused."""
        return any(e.field == field or (e.field or "").startswith(f"{field}.")
                   for e in self.errors)  # fmt: skip

    def _collect(self, read: Callable[[], T], fallback: T) -> T:
        try:
            return read()
        except ApiError as exc:
            self.refuse(exc.field or "", exc.message)
            return fallback

    def _get(self, name: str, required: bool) -> Any:
        self.seen.add(name)
        value = self.data.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise ApiError(400, f"{name} is required", name)
            return _MISSING
        return value

    def string(self, name: str, *, required: bool = False, max_length: int = 255,
               pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:  # fmt: skip
        return self._collect(lambda: self._string(name, required, max_length, pattern, what),
                             None)  # fmt: skip

    def _string(self, name: str, required: bool, max_length: int,
                pattern: re.Pattern[str] | None, what: str) -> str | None:  # fmt: skip
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string, got {_type_name(value)}", name)
        if "\x00" in value:
            raise ApiError(400, f"{name} must not contain NUL characters", name)
        if required and not value.strip():
            raise ApiError(400, f"{name} must not be empty", name)
        if len(value) > max_length:
            raise ApiError(400, f"{name} may be at most {max_length} characters long", name)
        if pattern is not None and not pattern.fullmatch(value):
            raise ApiError(400, f"{name} must be {what or f'like {pattern.pattern}'}", name)
        return value

    def name(self, name: str, *, required: bool = False) -> str | None:
        return self.string(name, required=required, max_length=64, pattern=NAME_PATTERN,
                           what="1-64 letters, digits and '_.-'")  # fmt: skip

    def integer(self, name: str, *, minimum: int, maximum: int, required: bool = False,
                default: int | None = None) -> int | None:  # fmt: skip
        return self._collect(lambda: self._integer(name, minimum, maximum, required, default),
                             None)  # fmt: skip

    def _integer(self, name: str, minimum: int, maximum: int, required: bool,
                 default: int | None) -> int | None:  # fmt: skip
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"{name} must be an integer, got {_type_name(value)}", name)
        if not minimum <= value <= maximum:
            raise ApiError(400, f"{name} must be between {minimum} and {maximum}, got {value}",
                           name)  # fmt: skip
        return value

    def value(self, name: str) -> Any:
        """The field as sent (None when absent), for a rule that checks it
        whole (``provisioner.templates.surface``) and names its own fields."""
        value = self._get(name, False)
        return None if value is _MISSING else value

    def boolean(self, name: str, *, default: bool = False) -> bool:
        return self._collect(lambda: self._boolean(name, default), default)

    def _boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ApiError(400, f"{name} must be true or false, got {_type_name(value)}", name)
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, default: str) -> str:
        value = self.string(name)
        if value is None:
            return default
        if value not in choices:
            self.refuse(name, f"{name} must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def strings(self, name: str, *, max_items: int = 32,
                max_length: int = 64) -> list[str] | None:  # fmt: skip
        """An array of strings (None when absent)."""
        return self._collect(lambda: self._strings(name, max_items, max_length), None)

    def _strings(self, name: str, max_items: int, max_length: int) -> list[str] | None:
        value = self._get(name, False)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            raise ApiError(400, f"{name} must be an array of strings, got {_type_name(value)}",
                           name)  # fmt: skip
        if len(value) > max_items:
            raise ApiError(400, f"{name} may hold at most {max_items} items", name)
        for i, item in enumerate(value):
            if not isinstance(item, str) or len(item) > max_length or "\x00" in item:
                raise ApiError(400, f"{name}[{i}] must be a string of at most {max_length} "
                               "characters", name)  # fmt: skip
        return list(value)

    def scalars(self, name: str) -> dict[str, str | int | bool]:
        """An object of strings, integers and booleans (template variables)."""
        return self._collect(lambda: self._scalars(name), {})

    def _scalars(self, name: str) -> dict[str, str | int | bool]:
        value = self._get(name, False)
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            raise ApiError(400, f"{name} must be an object, got {_type_name(value)}", name)
        for key, item in value.items():
            if not isinstance(item, str | int | bool):
                raise ApiError(400, f"{name}.{key} must be a string, integer or boolean, "
                               f"got {_type_name(item)}", f"{name}.{key}")  # fmt: skip
        return dict(value)

    def finish(self) -> None:
        """Refuse the request if any field failed or is unknown.

        Raises:
            ApiError: 400 naming the first problem's field, with every
                problem in ``errors``.
        """
        for name in self.data:
            if name not in self.seen:
                self.refuse(name, f"unknown field {name!r}")
        if self.errors:
            first = self.errors[0]
            raise ApiError(400, first.message, first.field, errors=list(self.errors))


def require_admin() -> None:
    """Only administrators may change what the provisioner trusts (nodes).

    Raises:
        ApiError: 403 for everyone else.
    """
    if not current_user().is_admin:
        raise ApiError(403, "only administrators may do this (provisioner user add --admin)")


def query_int(name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter.

    Raises:
        ApiError: not an integer or out of range.
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d+", raw.strip()):
        raise ApiError(400, f"{name} must be a non-negative integer, got {raw!r}", name)
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ApiError(400, f"{name} must be between {minimum} and {maximum}, got {value}", name)
    return value


def config_error(exc: ConfigError, status: int = 400) -> ApiError:
    """A ConfigError about the user's input as an API error naming the field."""
    return ApiError(status, exc.message, field_of(exc.message))


@contextmanager
def upstream(what: str) -> Iterator[None]:
    """Map a failing Proxmox call to 502 (with whether retrying may help)."""
    try:
        yield
    except ProvisionError as exc:
        raise ApiError(502, f"{what}: {exc}", transient=exc.transient) from None


@bp.route("/me")
def me() -> Response:
    """Who is calling; session callers also get their CSRF token."""
    user = current_user()
    body: dict[str, Any] = {"username": user.username, "is_admin": user.is_admin, "auth": g.auth}
    if g.auth == "session":
        body["csrf_token"] = csrf_token()
    return jsonify(body)


def _api_error(exc: ApiError) -> Response:
    return exc.response()


def _http_error(exc: HTTPException) -> Any:
    if not wants_json():
        return exc
    response = error_response(exc.code or 500, exc.description or exc.name)
    for name, value in exc.get_headers():
        if name in ("Allow", "Retry-After", "WWW-Authenticate"):  # what the status promises
            response.headers[name] = value
    return response


def _unavailable(exc: Exception) -> Any:
    log.error("%s unavailable: %s", "Redis" if isinstance(exc, redis_errors.RedisError)
              else "database", exc)  # fmt: skip
    what = "the queue and event bus (Redis)" if isinstance(exc, redis_errors.RedisError) else (
        "the database")  # fmt: skip
    return error_response(503, f"{what} is unavailable; try again shortly")


def _internal_error(exc: Exception) -> Any:
    log.exception("internal error in %s %s", request.method, request.path)
    return error_response(500, "internal error (logged on the server)")


def init_app(app: Flask) -> None:
    """Register the blueprint and the error handlers (the routes on ``bp``
    are those of the modules imported by then: ``web.app`` imports them)."""
    app.register_blueprint(bp)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis_errors.ConnectionError, _unavailable)
    app.register_error_handler(redis_errors.TimeoutError, _unavailable)
    app.register_error_handler(sa_errors.OperationalError, _unavailable)
    app.register_error_handler(Exception, _internal_error)
