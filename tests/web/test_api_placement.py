"""``"node": "auto"``: POST /api/containers places the request on a node by
what ``/cluster/resources`` reports (the simulator, registered under three
names: one PVE node, so equal usage), skips nodes in maintenance, keeps a
spread group apart, reserves in Redis and releases what a refusal held."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from sqlalchemy import func, select, update

from provisioner.models import Container, Node
from provisioner.reservations import Reservations
from provisioner.stored_request import StoredRequest
from tests.pipeline.conftest import NODE, Stack, admin_token, build_stack
from tests.web.conftest import add_sim_node, bearer, closed_port, db_session
from web.app import create_app

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def placement_stack(sim: dict[str, Any], redis_url: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    stack = build_stack(sim, redis_url, tmp_path_factory.mktemp("placement-stack"))
    yield stack  # no workers: what is accepted stays pending, its reservation held
    Queue(stack.settings.queue_name, connection=stack.redis).delete(delete_jobs=True)
    with stack.factory() as session:
        for cid in session.scalars(select(Container.id)):
            Reservations(stack.redis).release(cid)
    stack.redis.close()


@pytest.fixture(scope="module")
def app(placement_stack: Stack, sim: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(placement_stack.settings, {"TESTING": True})
    add_sim_node(app, sim, "sim-b")
    add_sim_node(app, sim, "sim-c")
    yield app
    app.extensions["provisioner"].close()


@pytest.fixture(scope="module")
def token(app: Flask) -> str:
    return admin_token(app.extensions["provisioner"].factory)


@pytest.fixture
def reservations(placement_stack: Stack) -> Reservations:
    return Reservations(placement_stack.redis)


def _post(client: FlaskClient, token: str, **fields: Any) -> Any:
    body = {"template": "nginx", "node": "auto", "hostname": "placed", **fields}
    return client.post("/api/containers", json=body, headers=bearer(token))


def _maintenance(app: Flask, *names: str) -> None:
    with db_session(app) as session:
        session.execute(update(Node).values(maintenance=Node.name.in_(names)))


def _count(app: Flask) -> int:
    with db_session(app) as session:
        return int(session.scalar(select(func.count()).select_from(Container)) or 0)


def _held(reservations: Reservations) -> int:
    return sum(f.count for f in reservations.in_flight().values())


def test_auto_skips_a_node_in_maintenance_and_says_why(app: Flask, client: FlaskClient,
                                                       token: str, reservations: Reservations) -> None:  # fmt: skip
    _maintenance(app, NODE, "sim-c")
    try:
        response = _post(client, token)
    finally:
        _maintenance(app)
    assert response.status_code == 201, response.json
    cid = response.json["id"]
    assert response.json["container"]["node"] == "sim-b"
    with db_session(app) as session:
        stored = StoredRequest.from_dict(session.get(Container, cid).request)
    assert stored.placement is not None and stored.placement["node"] == "sim-b"
    reasons = stored.placement["reasons"]
    assert reasons.startswith("placed on sim-b: ") and " GiB free after it, " in reasons
    assert f"{NODE} skipped: maintenance" in reasons and "sim-c skipped: maintenance" in reasons
    assert reservations.node_of(cid) == "sim-b"  # held until the run is ready or fails


def test_a_request_naming_no_node_is_placed_when_there_are_several(
        client: FlaskClient, token: str, reservations: Reservations) -> None:  # fmt: skip
    body = {"template": "nginx", "hostname": "unnamed"}
    response = client.post("/api/containers", json=body, headers=bearer(token))
    assert response.status_code == 201, response.json
    assert reservations.node_of(response.json["id"]) == response.json["container"]["node"]


def test_no_node_fits_is_a_400_naming_node_and_holds_nothing(
        app: Flask, client: FlaskClient, token: str, reservations: Reservations) -> None:  # fmt: skip
    before, held = _count(app), _held(reservations)
    _maintenance(app, NODE, "sim-b", "sim-c")
    try:
        response = _post(client, token, memory=1024)
    finally:
        _maintenance(app)
    assert response.status_code == 400 and response.json["field"] == "node", response.json
    assert response.json["error"] == (f"node: no node fits; {NODE} skipped: maintenance; sim-b "
                                      "skipped: maintenance; sim-c skipped: maintenance")  # fmt: skip
    assert _count(app) == before and _held(reservations) == held


def test_a_refused_request_releases_what_placement_held(
        app: Flask, client: FlaskClient, token: str, reservations: Reservations) -> None:  # fmt: skip
    before, held = _count(app), _held(reservations)
    response = _post(client, token, hostname="not a hostname!", cores=0)
    assert response.status_code == 400
    assert sorted(e["field"] for e in response.json["errors"]) == ["cores", "hostname"]
    assert _count(app) == before and _held(reservations) == held


def test_a_spread_group_goes_to_different_nodes_then_is_refused(
        app: Flask, client: FlaskClient, token: str) -> None:  # fmt: skip
    placed = []
    for i in range(3):
        response = _post(client, token, hostname=f"web{i}", spread="web")
        assert response.status_code == 201, response.json
        placed.append(response.json["container"]["node"])
    assert sorted(placed) == sorted([NODE, "sim-b", "sim-c"])
    fourth = _post(client, token, hostname="web3", spread="web")
    assert fourth.status_code == 400 and fourth.json["field"] == "node"
    assert "every node that fits holds a member of spread group 'web'" in fourth.json["error"]
    bad = _post(client, token, spread="no spaces")
    assert bad.status_code == 400 and bad.json["field"] == "spread"


def test_an_unreachable_node_is_skipped_with_its_error(app: Flask, client: FlaskClient,
                                                       token: str, sim: dict[str, Any]) -> None:  # fmt: skip
    add_sim_node(app, sim, "sim-down", port=closed_port())
    try:
        _maintenance(app, NODE, "sim-b", "sim-c")
        response = _post(client, token)
    finally:
        _maintenance(app)
        with db_session(app) as session:
            session.execute(Node.__table__.delete().where(Node.name == "sim-down"))
    assert response.status_code == 400
    assert "sim-down skipped: unreachable (" in response.json["error"]


def test_the_cluster_view_shows_each_node_its_load_and_what_is_in_flight(
        app: Flask, client: FlaskClient, token: str, sim: dict[str, Any],
        reservations: Reservations) -> None:  # fmt: skip
    """GET /api/cluster: one entry per node; a request accepted and not yet
    created is in flight on its node; maintenance is shown; a node whose
    cluster cannot be asked is unreachable with the reason."""

    def view() -> dict[str, Any]:
        answer = client.get("/api/cluster", headers=bearer(token))
        assert answer.status_code == 200, answer.json
        return {n["name"]: n for n in answer.json["nodes"]}

    _maintenance(app, "sim-c")
    add_sim_node(app, sim, "sim-down", port=closed_port())
    try:
        before = view()  # earlier tests' requests stay pending (no workers)
        placed = _post(client, token, hostname="in-flight")
        assert placed.status_code == 201, placed.json
        nodes = view()
    finally:
        _maintenance(app)
        with db_session(app) as session:
            session.execute(Node.__table__.delete().where(Node.name == "sim-down"))
    assert sorted(nodes) == [NODE, "sim-b", "sim-c", "sim-down"]
    chosen = placed.json["container"]["node"]
    added = {name: n["in_flight"] - before[name]["in_flight"] for name, n in nodes.items()}
    assert added == {name: int(name == chosen) for name in nodes}
    assert nodes[chosen]["in_flight_memory"] > before[chosen]["in_flight_memory"]
    assert nodes["sim-c"]["maintenance"] and nodes["sim-c"]["status"] == "online"
    assert chosen != "sim-c" and not nodes[NODE]["maintenance"]
    for name in (NODE, "sim-b", "sim-c"):
        n = nodes[name]
        assert n["status"] == "online" and n["problem"] is None
        assert n["cpus"] > 0 and 0 <= n["cpu"] <= 1
        assert 0 < n["memory_used"] <= n["memory_committed"] <= n["memory_total"], n
        assert n["storage"] == "local-lvm" and 0 <= n["disk_used"] < n["disk_total"]
        assert n["guests"] >= n["running"] >= 0
    down = nodes["sim-down"]
    assert down["status"] == "unreachable" and down["problem"] and down["cpu"] is None
    reservations.release(placed.json["id"])
    assert client.get("/api/cluster").status_code == 401


def test_a_node_cannot_be_named_auto(client: FlaskClient, token: str,
                                     sim: dict[str, Any]) -> None:  # fmt: skip
    response = client.post("/api/nodes", headers=bearer(token), json={
        "name": "auto", "host": "127.0.0.1", "token_id": sim["token_id"],
        "secret": sim["token_secret"], "verify": False})  # fmt: skip
    assert response.status_code == 400 and response.json["field"] == "name"


def test_the_preview_says_where_it_would_go_and_reserves_nothing(
        app: Flask, client: FlaskClient, token: str, reservations: Reservations) -> None:  # fmt: skip
    held = _held(reservations)
    _maintenance(app, NODE)
    try:
        got = client.post("/api/placement", headers=bearer(token),
                          json={"template": "nginx", "memory": 256, "disk": 2})  # fmt: skip
    finally:
        _maintenance(app)
    assert got.status_code == 200, got.json
    assert got.json["node"] in ("sim-b", "sim-c") and got.json["warning"] is None
    assert got.json["skipped"] == {NODE: "maintenance"}
    assert got.json["reasons"].startswith(f"placed on {got.json['node']}: ")
    assert _held(reservations) == held
    huge = client.post("/api/placement", headers=bearer(token), json={"memory": 64 * 1024 * 1024})
    assert huge.status_code == 200 and huge.json["node"] is None
    assert huge.json["reasons"].startswith("no node fits; ")
    bad = client.post("/api/placement", headers=bearer(token),
                      json={"spread": "a b", "template": "nope"})  # fmt: skip
    assert bad.status_code == 400 and bad.json["field"] == "spread"
    unknown = client.post("/api/placement", headers=bearer(token), json={"template": "nope"})
    assert unknown.status_code == 400 and unknown.json["field"] == "template"
