"""The one exception type API handlers raise: PVE's status and message."""

from __future__ import annotations


class PveError(Exception):
    """An API failure as PVE reports it.

    ``message`` becomes the HTTP reason phrase (first line) and the body's
    ``message``; ``errors`` (param -> text) the body's ``errors``.
    """

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def param_error(errors: dict[str, str]) -> PveError:
    """400 "Parameter verification failed." with per-parameter messages."""
    return PveError(400, "Parameter verification failed.", errors)
