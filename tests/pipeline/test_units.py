"""Pure logic of the pipeline's phases."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pipeline.context import off_loop
from pipeline.finalize import parse_listening

SS_TULNP = """\
udp   UNCONN 0      0            0.0.0.0:68        0.0.0.0:*    users:(("dhclient",pid=80,fd=7))
tcp   LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=61,fd=3))
tcp   LISTEN 0      511             [::]:80           [::]:*    users:(("nginx",pid=99,fd=7),("nginx",pid=98,fd=7))
tcp   LISTEN 0      128             [::]:22           [::]:*    users:(("sshd",pid=61,fd=4))
"""


def test_listening_services_with_their_protocol() -> None:
    assert parse_listening(SS_TULNP) == [
        {"proto": "tcp", "address": "0.0.0.0", "port": 22, "process": "sshd"},
        {"proto": "tcp", "address": "::", "port": 22, "process": "sshd"},
        {"proto": "udp", "address": "0.0.0.0", "port": 68, "process": "dhclient"},
        {"proto": "tcp", "address": "::", "port": 80, "process": "nginx"},
    ]


def test_one_protocol_without_the_netid_column() -> None:
    udp = 'UNCONN 0 0 0.0.0.0:68 0.0.0.0:* users:(("dhclient",pid=80,fd=7))\n'
    tcp = 'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=61,fd=3))\n'
    assert [s["proto"] for s in parse_listening(udp + tcp)] == ["tcp", "udp"]


def test_actions_settled_while_they_waited_are_moot() -> None:
    from pipeline.job import moot
    from provisioner.models import Lifecycle

    assert moot(Lifecycle.READY, "retry") == "the container is ready"
    for action in ("retry", "resync", "destroy", "start", "stop", "reboot"):
        assert moot(Lifecycle.DESTROYED, action) == "the container is destroyed"
    assert moot(Lifecycle.DESTROYED, "provision") is None  # provision has its own rule
    for lifecycle in (Lifecycle.ERROR, Lifecycle.CREATING, Lifecycle.DESTROYING):
        assert moot(lifecycle, "retry") is None and moot(lifecycle, "destroy") is None
    assert moot(Lifecycle.READY, "resync") is None and moot(Lifecycle.READY, "stop") is None


def test_blocking_calls_run_off_the_event_loop_and_keep_their_errors() -> None:
    released = threading.Event()

    def blocking(x: int, *, y: int) -> tuple[int, int]:
        # set by a coroutine: only reached if the loop runs meanwhile
        assert released.wait(5), "the event loop was blocked"
        return threading.get_ident(), x + y

    async def release() -> None:
        released.set()

    error = LookupError("the container has no vmid yet")

    def failing() -> None:
        raise error

    async def main() -> None:
        (thread, value), _ = await asyncio.gather(off_loop(blocking, 1, y=2), release())
        assert thread != threading.get_ident() and value == 3
        with pytest.raises(LookupError) as raised:
            await off_loop(failing)
        assert raised.value is error  # the very exception, not a wrapper

    asyncio.run(main())
