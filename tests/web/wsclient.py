"""simple-websocket's client for the tests, with one fix.

Its handshake reads the server's response and takes only the first event
(the acceptance) from what it read: frames that came in the same read stay
in wsproto's buffer until more data arrives, and a stream that sent all it
had (and closed) looks empty.  The relay sends the first events at once, so
this happens.  Browsers and aiohttp read them; so does this client.
"""

from __future__ import annotations

from simple_websocket import Client as _Client


class Client(_Client):  # type: ignore[misc]
    def handshake(self) -> None:
        super().handshake()
        if not self.connected:
            return
        # before the reader thread starts: the frames that came with the response
        self._handle_events()
        # a close among them takes effect once the reader sees the end of the
        # connection, after the messages before it have been received
        self.connected = True
