"""CSRF protection: one random token per session.

Every state-changing request (anything but GET, HEAD, OPTIONS) authenticated
by the session cookie, and the login form itself, must carry the token in
the form field ``csrf_token`` or the ``X-CSRF-Token`` header.  Requests
authenticated with a bearer API token are exempt: a browser never adds that
header on its own, so a forged request cannot carry it.
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
_SESSION_KEY = "csrf"


def csrf_token() -> str:
    """This session's token (made on first use; templates call it)."""
    token = session.get(_SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[_SESSION_KEY] = token
    return token


def rotate_csrf_token() -> None:
    """Forget the token (after login and logout); the next use makes a new one."""
    session.pop(_SESSION_KEY, None)


def csrf_failure() -> str | None:
    """Why this request fails the CSRF check, or None if it passes."""
    if request.method in SAFE_METHODS:
        return None
    expected = session.get(_SESSION_KEY)
    given = request.headers.get(HEADER) or request.form.get(FORM_FIELD)
    if not given:
        return f"CSRF token missing: send it in the {HEADER} header or the {FORM_FIELD} field"
    # compared as bytes: compare_digest refuses non-ASCII text, and any token may come in
    if not isinstance(expected, str) or not hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode()
    ):
        return "CSRF token invalid or expired: reload the page and try again"
    return None
