"""``POST /api/containers`` with the create surface (issue 19): what it
stores, a 400 naming every bad field before anything is written, and the
OpenAPI document's bounds held to the rules'."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from sqlalchemy import select

from provisioner import users
from provisioner.config import Settings
from provisioner.models import AuthKind, Container, Node
from provisioner.secrets.vault import set_node_secret
from provisioner.stored_request import StoredRequest
from provisioner.templates import mounts, surface
from tests.web.conftest import OFFLINE_NODE, bearer, count_containers, db_session
from tests.web.openapi_check import CheckedClient
from web.app import create_app

GOOD = {"template": "nginx", "node": OFFLINE_NODE, "hostname": "web1"}
SURFACE: dict[str, Any] = {
    "ip6": "2001:db8::10/64", "gateway6": "2001:db8::1", "vlan": 20, "firewall": True,
    "nics": [{"bridge": "vmbr1", "ip": "dhcp", "ip6": "auto", "vlan": 30, "firewall": True},
             {"ip": None, "ip6": "2001:db8:1::5/64"}],
    "nameserver": "198.18.0.1", "searchdomain": "example.com", "tags": ["web"],
    "pool": "customers", "onboot": True, "startup": "order=2,up=30",
    "mounts": [{"path": "/data", "size": 2}, {"path": "/srv/db", "size": "4G", "backup": False,
                                              "quota": True, "acl": True}],
    "binds": [{"source": "/srv/shared/site", "path": "/mnt/site", "ro": True}],
    "features": {"nesting": True, "mknod": True},
}  # fmt: skip


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The app with one allowed bind-mount prefix, /srv/shared; the node
    signs in as root@pam with its password (PVE's rule for bind mounts)."""
    allowed = dataclasses.replace(settings, bind_mount_allow=("/srv/shared",))
    app = create_app(allowed, {"TESTING": True})
    with db_session(app) as session:
        node = session.scalars(select(Node).where(Node.name == OFFLINE_NODE)).one()
        node.auth_kind, node.pve_user, node.token_name = AuthKind.PASSWORD, "root@pam", None
        set_node_secret(app.extensions["provisioner"].box, node, "root password")
    yield app
    app.extensions["provisioner"].close()


def test_root_only_options_through_a_token_are_a_400_naming_them(settings: Settings) -> None:
    allowed = dataclasses.replace(settings, bind_mount_allow=("/srv/shared",))
    app = create_app(allowed, {"TESTING": True})
    try:
        with db_session(app) as session:
            users.create_user(session, "root-only", "a long password 1", is_admin=True)
            _, secret = users.create_api_token(session, "root-only", "t")
        response = app.test_client().post("/api/containers", json={**GOOD, **SURFACE},
                                          headers=bearer(secret))  # fmt: skip
        assert response.status_code == 400, response.json
        fields = {e["field"] for e in response.json["errors"]}
        assert fields == {"binds", "features"}, response.json
        assert count_containers(app) == 0
    finally:
        app.extensions["provisioner"].close()


def test_every_option_is_stored_normalised(app: Flask, client: FlaskClient, token: str) -> None:
    response = client.post("/api/containers", json={**GOOD, **SURFACE}, headers=bearer(token))
    assert response.status_code == 201, response.json
    request = response.json["container"]["request"]
    assert request["mounts"][1] == {"path": "/srv/db", "size": 4, "backup": False,
                                    "quota": True, "acl": True}  # fmt: skip
    assert request["binds"] == SURFACE["binds"] and request["vlan"] == 20
    with db_session(app) as session:
        row = session.get(Container, response.json["id"])
        assert row is not None
        stored = StoredRequest.from_dict(row.request)
    assert row.request["version"] == 2
    assert stored.nics == [SURFACE["nics"][0], {"ip": None, "ip6": "2001:db8:1::5/64"}]
    assert (stored.startup, stored.features) == ("order=2,up=30", SURFACE["features"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vlan": 4095}, "vlan"),
        ({"vlan": "20"}, "vlan"),
        ({"ip6": "fe80::1"}, "ip6"),
        ({"gateway6": "2001:db8::1"}, "gateway6"),
        ({"firewall": "yes please"}, "firewall"),
        ({"nics": {"bridge": "vmbr1"}}, "nics"),
        ({"nics": [{"vlan": 0}]}, "nics[0].vlan"),
        ({"nics": [{"ip": "dhcp"}, {"ip6": "2001:db8::5"}]}, "nics[1].ip6"),
        ({"nics": [{"mtu": 9000}]}, "nics[0].mtu"),
        ({"nics": [{}] * (surface.MAX_NICS + 1)}, "nics"),
        ({"nameserver": "dns.example"}, "nameserver"),
        ({"searchdomain": "-bad-"}, "searchdomain"),
        ({"tags": "web"}, "tags"),
        ({"tags": ["Web"]}, "tags"),
        ({"pool": "a/b"}, "pool"),
        ({"onboot": "sometimes"}, "onboot"),
        ({"startup": "order=-1"}, "startup.order"),
        ({"mounts": [{"path": "/data"}]}, "mounts[0].size"),
        ({"mounts": [{"path": "/data", "size": mounts.MOUNT_SIZE_MAX + 1}]}, "mounts[0].size"),
        ({"mounts": [{"path": "relative", "size": 1}]}, "mounts[0].path"),
        ({"mounts": [{"path": "/data/../etc", "size": 1}]}, "mounts[0].path"),
        ({"mounts": [{"path": "/d", "size": 1}, {"path": "/d", "size": 1}]}, "mounts[1].path"),
        ({"mounts": [{"path": "/d", "size": 1, "storage": "bad storage"}]}, "mounts[0].storage"),
        ({"mounts": [{"path": "/d", "size": 1}] * (mounts.MAX_MOUNTS + 1)}, "mounts"),
        ({"binds": [{"source": "/etc", "path": "/mnt/etc"}]}, "binds[0].source"),
        ({"binds": [{"source": "/srv/shared/../../root", "path": "/mnt/r"}]}, "binds[0].source"),
        ({"binds": [{"source": "/srv/shared/x", "path": "/proc"}]}, "binds[0].path"),
        ({"features": {"nesting": "on please"}}, "features.nesting"),
        ({"features": {"privileged": True}}, "features.privileged"),
    ],
)  # fmt: skip
def test_a_bad_option_is_a_400_naming_its_field(app: Flask, client: FlaskClient, token: str,
                                                change: dict[str, Any], field: str) -> None:  # fmt: skip
    response = client.post("/api/containers", json={**GOOD, **change}, headers=bearer(token))
    assert response.status_code == 400, response.json
    assert response.json["field"] == field, response.json
    assert [e["field"] for e in response.json["errors"]] == [field]
    assert count_containers(app) == 0


def test_every_bad_option_at_once(app: Flask, client: FlaskClient, token: str) -> None:
    response = client.post("/api/containers", headers=bearer(token), json={
        **GOOD, "cores": 0, "vlan": 0, "mounts": [{"path": "/etc", "size": 1}],
        "binds": [{"source": "/root", "path": "/mnt/root"}]})  # fmt: skip
    assert response.status_code == 400
    fields = {e["field"] for e in response.json["errors"]}
    assert fields == {"cores", "vlan", "mounts[0].path", "binds[0].source"}
    message = next(e["message"] for e in response.json["errors"] if e["field"] == "binds[0].source")
    assert "/root is not under an allowed prefix" in message


def test_bind_mounts_are_refused_without_an_allow_list(settings: Settings) -> None:
    app = create_app(settings, {"TESTING": True})  # PROVISIONER_BIND_MOUNT_ALLOW unset
    try:
        app.test_client_class = CheckedClient
        with db_session(app) as session:
            users.create_user(session, "binder", "a long enough password")
            _, token = users.create_api_token(session, "binder", "tests")
        response = app.test_client().post("/api/containers", headers=bearer(token), json={
            **GOOD, "binds": [{"source": "/srv/shared/x", "path": "/mnt/x"}]})  # fmt: skip
        assert response.status_code == 400 and response.json["field"] == "binds[0].source"
        assert "bind mounts are not allowed here (/srv/shared/x)" in response.json["error"]
        assert count_containers(app) == 0
    finally:
        app.extensions["provisioner"].close()


def _create_schema(client: FlaskClient, token: str) -> Draft202012Validator:
    doc = client.get("/api/openapi.json", headers=bearer(token)).json
    return Draft202012Validator(doc["components"]["schemas"]["ContainerCreate"])


def test_the_document_gives_the_rules_bounds(client: FlaskClient, token: str) -> None:
    schema = _create_schema(client, token).schema["properties"]
    assert (schema["vlan"]["minimum"], schema["vlan"]["maximum"]) == (1, 4094)
    nic = schema["nics"]["items"]["properties"]
    assert (nic["vlan"]["minimum"], nic["vlan"]["maximum"]) == (1, 4094)
    assert schema["nics"]["maxItems"] == surface.MAX_NICS
    assert schema["mounts"]["maxItems"] == mounts.MAX_MOUNTS
    assert schema["binds"]["maxItems"] == mounts.MAX_BINDS
    assert schema["tags"]["maxItems"] == surface.MAX_TAGS
    size = schema["mounts"]["items"]["properties"]["size"]["oneOf"][0]
    assert (size["minimum"], size["maximum"]) == (mounts.MOUNT_SIZE_MIN, mounts.MOUNT_SIZE_MAX)
    assert set(schema["features"]["properties"]) == set(surface.FEATURE_NAMES)
    assert set(surface.SURFACE_KEYS) <= set(schema)


@pytest.mark.parametrize(
    "change",
    [{"vlan": 0}, {"vlan": 4095}, {"nics": [{"vlan": 4095}]},
     {"nics": [{}] * (surface.MAX_NICS + 1)},
     {"mounts": [{"path": "/d", "size": 0}]},
     {"mounts": [{"path": "/d", "size": mounts.MOUNT_SIZE_MAX + 1}]},
     {"mounts": [{"path": "/d", "size": 1}] * (mounts.MAX_MOUNTS + 1)},
     {"binds": [{"source": "/srv/shared/x", "path": "/m", "rw": True}]},
     {"features": {"privileged": True}}],
)  # fmt: skip
def test_what_the_document_refuses_the_api_refuses(app: Flask, client: FlaskClient, token: str,
                                                   change: dict[str, Any]) -> None:  # fmt: skip
    body = {**GOOD, **change}
    assert not _create_schema(client, token).is_valid(body)
    assert _create_schema(client, token).is_valid({**GOOD, **SURFACE})
    response = client.post("/api/containers", json=body, headers=bearer(token))
    assert response.status_code == 400, response.json


def test_a_templates_surface_defaults_are_in_its_detail(settings: Settings, tmp_path: Any) -> None:
    """GET /api/templates/<name> (held to the OpenAPI document by the checked client)."""
    import shutil

    from tests.conftest import ROOT
    from tests.provisioner.templates.test_surface import TEMPLATE_TOML

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates_lxc" / "nginx", templates / "nginx")
    (templates / "store").mkdir()
    (templates / "store" / "template.toml").write_text(TEMPLATE_TOML)
    app = create_app(dataclasses.replace(settings, templates_dir=templates), {"TESTING": True})
    try:
        app.test_client_class = CheckedClient
        with db_session(app) as session:
            users.create_user(session, "reader", "a long enough password")
            _, token = users.create_api_token(session, "reader", "tests")
        client = app.test_client()
        body = client.get("/api/templates/store", headers=bearer(token)).json
        assert body["network"] == {"ip6": "auto", "firewall": True, "nameserver": "198.18.0.1",
                                   "searchdomain": "example.com"}  # fmt: skip
        assert body["mounts"] == [{"path": "/var/lib/store", "size": 4, "backup": True},
                                  {"path": "/var/cache/store", "size": 1, "backup": False}]  # fmt: skip
        assert body["boot"] == {"onboot": True, "pool": "databases", "startup": "order=3,up=20"}
        assert body["features"]["mknod"] is True
        plain = client.get("/api/templates/nginx", headers=bearer(token)).json
        assert plain["mounts"] == [] and plain["boot"]["onboot"] is None
    finally:
        app.extensions["provisioner"].close()
