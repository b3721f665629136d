"""The web process's pool of Proxmox clients (building a client makes no request)."""

from __future__ import annotations

import threading

import pytest

from provisioner.errors import PveTransientError
from provisioner.pve.http import PasswordAuth, PveConnection
from web.pve_pool import ClientPool


def connection(host: str = "pve1.invalid") -> PveConnection:
    return PveConnection(host=host, node="pve1", auth=PasswordAuth("root@pam", "pw"))


def test_a_client_is_lent_to_one_caller_and_then_reused() -> None:
    pool = ClientPool()
    conn = connection()
    with pool.client(conn) as first:
        assert pool.idle(conn) == 0
        with pool.client(conn) as second:  # lent twice at once: two clients
            assert second is not first
    assert pool.idle(conn) == 2
    with pool.client(conn) as again:
        assert again in (first, second)
    with pool.client(connection("pve2.invalid")) as other:
        assert other not in (first, second)
    pool.close()
    assert pool.idle(conn) == 0


def test_failures_keep_or_close_the_client() -> None:
    pool = ClientPool()
    conn = connection()
    with pytest.raises(PveTransientError), pool.client(conn):
        raise PveTransientError("node away")  # the node's answer: the client is fine
    assert pool.idle(conn) == 1
    with pytest.raises(RuntimeError), pool.client(conn) as broken:
        raise RuntimeError("bug")
    assert pool.idle(conn) == 0  # closed, not kept
    with pool.client(conn) as fresh:
        assert fresh is not broken


def test_idle_clients_and_connections_are_bounded() -> None:
    pool = ClientPool(idle_per_connection=2, connections=2)
    conns = [connection(f"pve{i}.invalid") for i in range(3)]
    barrier = threading.Barrier(3)

    def use() -> None:
        with pool.client(conns[0]):
            barrier.wait(5)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert pool.idle(conns[0]) == 2  # the third was closed
    for conn in conns[1:]:
        with pool.client(conn):
            pass
    assert pool.idle(conns[0]) == 0  # least recently used: dropped
    assert pool.idle(conns[1]) == pool.idle(conns[2]) == 1
