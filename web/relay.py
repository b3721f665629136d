"""The websocket relay: ``/ws/containers/<id>/events?after=<seq>``.

Streams a container's events (DESIGN.md's contract) through
``provisioner.events.EventReader``: the stored history after ``after``, then
live events, each exactly once and in order, one JSON event per message;
the server closes the connection after ``complete`` or ``error``.  A client
that reconnects with the last ``seq`` it saw gets exactly the rest.

Each connection blocks in its own thread (gunicorn's gthread worker, or the
threaded development server), reading Redis on its own, so a slow or dead
client holds up nobody else, and the workers never wait for a browser.
Pings (``SOCK_SERVER_OPTIONS``) keep idle connections open through proxies
and find dead clients; a client that goes away ends its reader within a
second.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, g, request
from flask_sock import Sock
from werkzeug.wrappers import Response as BaseResponse

from provisioner.events import EventReader
from provisioner.models import Container
from web.app import get_db, resources
from web.auth import error_response

bp = Blueprint("relay", __name__)
sock = Sock()
NORMAL_CLOSURE = 1000
POLL_MS = 1000
_CONTAINER_ID = re.compile(
    r"[0-9a-fA-F-]{1,36}"
)  # how long one Redis read blocks: the delay to notice a departed client


class ClientGone(threading.Event):
    """Set when asked to stop, or as soon as the client has disconnected."""

    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws

    def is_set(self) -> bool:
        return super().is_set() or not self.ws.connected


def _after() -> int | None:
    raw = request.args.get("after", "")
    if raw == "":
        return 0
    return int(raw) if re.fullmatch(r"\d{1,10}", raw) else None


@bp.before_request
def check_stream() -> BaseResponse | None:
    """Refuse before the websocket handshake, with a plain HTTP status:
    a bad ``after``, an unknown container, a foreign origin."""
    if _after() is None:
        return error_response(400, "after must be a non-negative integer (the last seq seen)",
                              field="after")  # fmt: skip
    origin = request.headers.get("Origin")
    # A browser sends cookies with a cross-site websocket handshake: only a
    # page from this site may use the session (bearer tokens are not sent by
    # browsers).  A page cannot set X-Forwarded-Host, so a proxy's is trusted.
    allowed = {request.host, request.headers.get("X-Forwarded-Host")}
    if g.auth == "session" and origin and urlsplit(origin).netloc not in allowed:
        return error_response(403, f"websocket from a foreign origin {origin!r} refused")
    container_id = (request.view_args or {}).get("container_id", "")
    exists = bool(_CONTAINER_ID.fullmatch(container_id)) and (
        get_db().get(Container, container_id) is not None)  # fmt: skip
    get_db().commit()  # the stream may last hours: hold no transaction
    if not exists:
        return error_response(404, f"no container {container_id!r}")
    return None


@sock.route("/ws/containers/<container_id>/events", bp=bp)
def container_events(ws: Any, container_id: str) -> None:
    """Replay, then follow; close after the terminal event."""
    res = resources()
    reader = EventReader(res.redis, res.factory, container_id)
    for event in reader.events(_after() or 0, block_ms=POLL_MS, stop=ClientGone(ws)):
        ws.send(event.to_json())
        if event.terminal:
            ws.close(reason=NORMAL_CLOSURE, message=f"{event.type}: stream ends")
            return


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
