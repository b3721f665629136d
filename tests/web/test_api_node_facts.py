"""POST /api/containers checks the storage, bridge and static address
against what the node has (the simulator), before anything is stored."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from sqlalchemy import func, select

from provisioner.models import Container, Node
from provisioner.node_facts import NodeFacts
from provisioner.nodes import connection_for
from tests.pipeline.conftest import NODE, Stack, admin_token, build_stack
from tests.web.conftest import add_sim_node, bearer, closed_port, db_session
from web.app import create_app

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def facts_stack(sim: dict[str, Any], redis_url: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    stack = build_stack(sim, redis_url, tmp_path_factory.mktemp("facts-stack"))
    yield stack  # no workers: what is accepted stays pending
    Queue(stack.settings.queue_name, connection=stack.redis).delete(delete_jobs=True)
    stack.redis.close()


@pytest.fixture
def app(facts_stack: Stack) -> Iterator[Flask]:
    app = create_app(facts_stack.settings, {"TESTING": True})
    yield app
    app.extensions["provisioner"].close()


@pytest.fixture
def token(app: Flask) -> str:
    return admin_token(app.extensions["provisioner"].factory)


def _count(app: Flask) -> int:
    with db_session(app) as session:
        return int(session.scalar(select(func.count()).select_from(Container)) or 0)


def _post(client: FlaskClient, token: str, **fields: Any) -> Any:
    body = {"template": "nginx", "node": NODE, "hostname": "facts", **fields}
    return client.post("/api/containers", json=body, headers=bearer(token))


def _host(sim: dict[str, Any], n: int) -> str:
    return str(ipaddress.ip_network(sim["subnet"]).network_address + n)


def test_the_storage_bridge_and_address_must_exist_on_the_node(
        app: Flask, client: FlaskClient, token: str, sim: dict[str, Any]) -> None:  # fmt: skip
    net = ipaddress.ip_network(sim["subnet"])
    before = _count(app)
    for fields, field, says in (
        ({"bridge": "vmbr9"}, "bridge", f"node {NODE} has no bridge 'vmbr9'; its bridges: vmbr0"),
        ({"storage": "nope"}, "storage", "has no storage 'nope'; storages that can: local-lvm"),
        ({"storage": "local"}, "storage", "storage 'local' on node sim cannot hold containers"),
        ({"ip": "192.0.2.10/24"}, "ip", f"192.0.2.10 is not in the subnet {net} of bridge vmbr0"),
        ({"ip": f"{net.network_address}/{net.prefixlen}"}, "ip", "is the network address"),
        ({"ip": f"{net.broadcast_address}/{net.prefixlen}"}, "ip", "is the broadcast address"),
        ({"ip": f"{sim['gateway']}/{net.prefixlen}"}, "ip", "is the node's own address"),
        ({"pool": "nope"}, "pool", f"the cluster of node {NODE} has no pool 'nope'"),
    ):  # fmt: skip
        response = _post(client, token, **fields)
        assert response.status_code == 400, (fields, response.json)
        assert response.json["field"] == field and says in response.json["error"], response.json
    assert _count(app) == before
    fine = _post(client, token, ip=f"{_host(sim, 77)}/{net.prefixlen}", bridge="vmbr0",
                 storage="local-lvm")  # fmt: skip
    assert fine.status_code == 201, fine.json
    assert _count(app) == before + 1


def test_every_problem_with_the_node_at_once(app: Flask, client: FlaskClient, token: str,
                                            sim: dict[str, Any]) -> None:  # fmt: skip
    before = _count(app)
    response = _post(
        client, token, cores="two", storage="local", bridge="vmbr9", ip="192.0.2.10/24"
    )  # the address is not checked on a bridge that is not there
    assert response.status_code == 400
    assert [e["field"] for e in response.json["errors"]] == ["cores", "storage", "bridge"]
    refused = _post(client, token, storage="bad storage", ip="192.0.2.10/24")
    assert [e["field"] for e in refused.json["errors"]] == ["storage", "ip"]
    assert "1-64 letters" in refused.json["errors"][0]["message"]  # blamed once, for its name
    gateway = _post(client, token, ip="192.0.2.10/24", gateway="nope")
    assert [e["field"] for e in gateway.json["errors"]] == ["gateway", "ip"]
    assert _count(app) == before


def test_the_nodes_defaults_are_checked_too(app: Flask, client: FlaskClient, token: str,
                                           sim: dict[str, Any]) -> None:  # fmt: skip
    add_sim_node(app, sim, "odd-defaults", default_storage="local", default_bridge="vmbr5")
    response = _post(client, token, node="odd-defaults")
    assert response.status_code == 400
    errors = {e["field"]: e["message"] for e in response.json["errors"]}
    assert "storage 'local' (the node's default) on node odd-defaults cannot" in errors["storage"]
    assert "no bridge 'vmbr5' (the node's default)" in errors["bridge"]
    fixed = _post(client, token, node="odd-defaults", storage="local-lvm", bridge="vmbr0")
    assert fixed.status_code == 201, fixed.json


def test_an_unreachable_node_refuses_nothing_at_submit(app: Flask, client: FlaskClient,
                                                      token: str, sim: dict[str, Any]) -> None:  # fmt: skip
    add_sim_node(app, sim, "down", port=closed_port())
    response = _post(client, token, node="down", bridge="vmbr9", ip="192.0.2.10/24")
    assert response.status_code == 201, response.json  # the create phase's pre-flight decides
    assert response.json["container"]["request"]["bridge"] == "vmbr9"


def test_facts_are_cached_and_read_again_before_refusing(app: Flask, client: FlaskClient,
                                                         token: str) -> None:  # fmt: skip
    res = app.extensions["provisioner"]
    with db_session(app) as session:
        node = session.scalars(select(Node).where(Node.name == NODE)).one()
        key = dataclasses.replace(connection_for(node, res.box),
                                  connect_timeout=res.settings.web_pve_connect_timeout,
                                  read_timeout=res.settings.web_pve_read_timeout)  # fmt: skip
    # what the node had a moment ago: no vmbr0 yet, and a "ghost" bridge since removed
    res.node_facts.put(key, NodeFacts(storages={"local-lvm": frozenset({"rootdir"})},
                                      bridges={"ghost": None}))  # fmt: skip
    ghost = _post(client, token, bridge="ghost")
    assert ghost.status_code == 201, ghost.json  # by the cache (the pre-flight is the last word)
    added = _post(client, token, bridge="vmbr0")
    assert added.status_code == 201, added.json  # not in the cache: read again, then accepted
    facts = res.node_facts.get(key)
    assert facts is not None and "vmbr0" in facts.bridges and "ghost" not in facts.bridges
    gone = _post(client, token, bridge="ghost")
    assert gone.status_code == 400 and gone.json["field"] == "bridge"
