"""Idle Proxmox clients of one web process, kept for the next request.

The containers list asks every node for its containers every few seconds
per open tab, and the wizard and the nodes page ask for storages, bridges
and resources.  A fresh client per call would log in again each time (a
new ticket per call for password nodes: load on the node and noise in its
auth log) and open a new TLS connection.  The pool lends a client to one
caller at a time (a client is not thread-safe) and takes it back for the
next, so a process logs in once per ticket lifetime and reuses connections.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from provisioner.errors import ProvisionError
from provisioner.pve.client import PveClient
from provisioner.pve.http import PveConnection

IDLE_PER_CONNECTION = 4  # clients kept per connection; more are closed after use
CONNECTIONS = 64  # connections kept; the least recently used beyond are closed


class ClientPool:
    """Idle clients by connection (trust, credentials and timeouts included,
    so a node whose settings change gets new clients)."""

    def __init__(self, idle_per_connection: int = IDLE_PER_CONNECTION,
                 connections: int = CONNECTIONS) -> None:  # fmt: skip
        self.idle_per_connection = idle_per_connection
        self.connections = connections
        self._idle: OrderedDict[PveConnection, list[PveClient]] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def client(self, connection: PveConnection) -> Iterator[PveClient]:
        """A client of ``connection`` for the duration of the block."""
        with self._lock:
            idle = self._idle.get(connection)
            client = idle.pop() if idle else None
        if client is None:
            client = PveClient(connection)
        try:
            yield client
        except ProvisionError:  # the node answered no, or not at all: the client is fine
            self._give_back(client)
            raise
        except BaseException:
            client.close()  # whatever else broke may have left it half-way
            raise
        self._give_back(client)

    def _give_back(self, client: PveClient) -> None:
        closing: list[PveClient] = []
        with self._lock:
            idle = self._idle.setdefault(client.connection, [])
            self._idle.move_to_end(client.connection)
            if len(idle) < self.idle_per_connection:
                idle.append(client)
            else:
                closing.append(client)
            while len(self._idle) > self.connections:
                _, old = self._idle.popitem(last=False)
                closing += old
        for c in closing:
            c.close()

    def idle(self, connection: PveConnection) -> int:
        """How many clients of ``connection`` are waiting to be lent."""
        with self._lock:
            return len(self._idle.get(connection, ()))

    def close(self) -> None:
        with self._lock:
            clients = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in clients:
            c.close()
