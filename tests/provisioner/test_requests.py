"""Storing and queueing a request (``provisioner.requests``), on SQLite and
PostgreSQL: the stored request is a versioned ``StoredRequest`` without a
secret, rows written before the version key still run, and a Redis that is
away does not lose the request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner.config import Settings
from provisioner.models import Container, Lifecycle, Node
from provisioner.request_checks import ActionRefused
from provisioner.requests import (
    ProvisionRequest,
    check_request,
    create_request_of,
    generated_secrets,
    request_container,
    stored_variables,
    submit,
)
from provisioner.secrets.box import SecretBox
from provisioner.secrets.vault import container_root_password, variable_aad
from provisioner.stored_request import StoredRequest

ROOT_PASSWORD = "root-password-not-stored"
DB_PASSWORD = "db-password-not-stored"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url="sqlite://",
                    secret_key_file=tmp_path / "secret.key", queue_name="test-requests")  # fmt: skip


def database_request(node: str, **overrides: Any) -> ProvisionRequest:
    fields: dict[str, Any] = {
        "template": "postgresql", "node": node, "hostname": "db1", "cores": 2,
        "ip": "198.18.0.170/24", "gateway": "198.18.0.1",
        "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB operator@laptop",
        "root_password": ROOT_PASSWORD, "variables": {"db_password": DB_PASSWORD},
        **overrides,
    }  # fmt: skip
    return ProvisionRequest(**fields)


def test_the_stored_request_is_versioned_and_holds_no_secret(
    factory: sessionmaker[Session], box: SecretBox, settings: Settings, node: str
) -> None:
    req = database_request(node)
    with factory() as session:
        cid = submit(session, box, settings, req).id
        session.commit()
    with factory() as session:
        ct = session.get(Container, cid)
        assert ct is not None
        row = json.dumps(ct.request)
        assert ROOT_PASSWORD not in row and DB_PASSWORD not in row
        assert ct.request["version"] == 1
        stored = StoredRequest.from_dict(ct.request)
        assert stored.settings_json() == req.settings_json()
        assert set(stored.secret_variables) == {"db_password"}
        assert "db_password" not in stored.variables and stored.variables["db_name"] == "app"
        # what the worker reads back
        assert stored_variables(box, ct)["db_password"] == DB_PASSWORD
        assert container_root_password(box, ct) == ROOT_PASSWORD
        create, defaults = create_request_of(ct, ct.node)
        assert (create.hostname, create.cores, create.marker) == ("db1", 2, cid)
        assert (create.network.ip, create.network.gateway) == ("198.18.0.170/24", "198.18.0.1")
        assert create.root_password is None
        assert create.ssh_public_keys == f"{ct.ssh_public_key}\n{req.ssh_public_key}"
        assert (defaults.node, defaults.storage) == ("pve", "local-lvm")


def test_a_row_written_before_the_version_key_still_runs(
    factory: sessionmaker[Session], box: SecretBox, node: str
) -> None:
    with factory() as session:
        pve1 = session.scalars(select(Node).where(Node.name == node)).one()
        ct = Container(node_id=pve1.id, template="postgresql", hostname="old1")
        session.add(ct)
        session.flush()
        ct.request = {  # exactly what releases before the version key wrote
            "vmid": 9170, "cores": None, "memory": 1024, "swap": None, "disk": None,
            "ip": "dhcp", "gateway": None, "bridge": "vmbr1", "storage": None,
            "ssh_public_key": None, "variables": {"db_name": "shop"},
            "secret_variables": {"db_password": box.encrypt(
                DB_PASSWORD, variable_aad(ct.id, "db_password"))},
        }  # fmt: skip
        session.commit()
        cid = ct.id
    with factory() as session:
        ct = session.get(Container, cid)
        assert ct is not None
        assert stored_variables(box, ct) == {"db_name": "shop", "db_password": DB_PASSWORD}
        create, _ = create_request_of(ct, ct.node)
        assert (create.vmid, create.memory, create.network.bridge) == (9170, 1024, "vmbr1")
        assert create.network.is_dhcp and create.ssh_public_keys is None


def test_request_container_keeps_the_request_when_redis_is_away(
    factory: sessionmaker[Session], box: SecretBox, settings: Settings, node: str
) -> None:
    away = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    req = database_request(node, root_password=None)
    with factory() as session:
        requested = request_container(session, box, settings, away, req,
                                      check_request(session, settings, req))  # fmt: skip
    assert requested.job_id is None and requested.queue_error
    assert requested.queue_warning() == (
        "the queue is unavailable; the request is stored and will run later"
    )
    assert requested.queue_warning(with_cause=True) == (
        f"the queue is unavailable ({requested.queue_error}); "
        "the request is stored and will run later")  # fmt: skip
    with factory() as session:  # committed, pending, its generated password readable
        ct = session.get(Container, requested.container.id)
        assert ct is not None and ct.lifecycle == Lifecycle.PENDING
        assert requested.root_password and container_root_password(box, ct) == (
            requested.root_password)  # fmt: skip
    assert requested.generated_secrets == {}  # the request gave db_password


def test_request_container_refuses_a_taken_vmid_before_storing(
    factory: sessionmaker[Session], box: SecretBox, settings: Settings, node: str
) -> None:
    away = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    first = database_request(node, vmid=9175)
    with factory() as session:
        taken = submit(session, box, settings, first)
        taken.vmid = 9175
        session.commit()
        second = database_request(node, hostname="db2", vmid=9175)
        checked = check_request(session, settings, second)
        with pytest.raises(ActionRefused, match=f"vmid: 9175 is already used by container "
                                                f"{taken.id}"):  # fmt: skip
            request_container(session, box, settings, away, second, checked)
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Container)) == 1


def test_request_container_queues_one_job(
    factory: sessionmaker[Session], box: SecretBox, settings: Settings, node: str, redis: Redis
) -> None:
    queue = Queue(settings.queue_name, connection=redis)
    queue.delete(delete_jobs=True)
    req = database_request(node)
    with factory() as session:
        requested = request_container(session, box, settings, redis, req,
                                      check_request(session, settings, req))  # fmt: skip
    try:
        assert requested.queue_error is None and requested.queue_warning() is None
        assert requested.root_password is None  # the request gave one
        assert queue.job_ids == [requested.job_id]
        job = queue.fetch_job(str(requested.job_id))
        assert job is not None and job.args == (requested.container.id, "provision")
    finally:
        queue.delete(delete_jobs=True)


def test_a_create_returns_the_secret_variables_it_generated(
    factory: sessionmaker[Session], box: SecretBox, settings: Settings, node: str
) -> None:
    """Shown once: the values generated for the secret variables the request
    left out (wordpress's administrator and database passwords), as stored."""
    away = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    req = database_request(node, template="wordpress", hostname="wp1",
                           variables={"db_password": DB_PASSWORD})  # fmt: skip
    with factory() as session:
        requested = request_container(session, box, settings, away, req,
                                      check_request(session, settings, req))  # fmt: skip
        ct = session.get(Container, requested.container.id)
        assert ct is not None
        stored = stored_variables(box, ct)
    assert list(requested.generated_secrets) == ["admin_password"]
    assert requested.generated_secrets["admin_password"] == stored["admin_password"]
    assert len(stored["admin_password"]) == 24 and stored["db_password"] == DB_PASSWORD
    assert stored["admin_password"] not in json.dumps(ct.request)
    assert "generated_secrets" not in repr(requested) and stored["admin_password"] not in repr(
        requested)  # fmt: skip


def test_generated_secrets_are_the_secret_variables_left_out() -> None:
    from provisioner.templates.loader import load_template

    template = load_template(Path(__file__).resolve().parents[2] / "templates_lxc" / "wordpress")
    resolved = {"site_title": "T", "admin_password": "a" * 24, "db_password": "d" * 32}
    assert generated_secrets(template, {"site_title": "T"}, resolved) == {
        "admin_password": "a" * 24, "db_password": "d" * 32}  # fmt: skip
    assert generated_secrets(template, {"db_password": "d" * 32}, resolved) == {
        "admin_password": "a" * 24}  # fmt: skip
    assert generated_secrets(template, {"admin_password": "x", "db_password": "y"}, resolved) == {}


def test_root_only_options_need_root_at_pam_signed_in_with_its_password() -> None:
    # pve-container's check_ct_modify_config_perm compares the user with
    # root@pam; an API token is root@pam!NAME there, so PVE refuses it
    import dataclasses

    from provisioner.errors import InvalidRequest
    from provisioner.models import AuthKind
    from provisioner.requests import check_root_only
    from provisioner.templates.loader import load_template
    from provisioner.templates.mounts import BindMount
    from provisioner.templates.surface import Surface

    template = load_template(Path(__file__).parents[2] / "templates_lxc" / "nginx")
    token = Node(name="pve1", auth_kind=AuthKind.TOKEN, pve_user="root@pam", token_name="ci")
    password = Node(name="pve1", auth_kind=AuthKind.PASSWORD, pve_user="root@pam")
    other = Node(name="pve1", auth_kind=AuthKind.PASSWORD, pve_user="ops@pve")
    binds = Surface(binds=(BindMount("/srv/shared/site", "/mnt/site"),))
    fuse = Surface(features={"fuse": True, "nesting": True})
    check_root_only(token, template, Surface(features={"nesting": True}))  # nesting: anyone
    check_root_only(password, template, dataclasses.replace(binds, features=fuse.features))
    with pytest.raises(InvalidRequest) as refused:
        check_root_only(token, template, dataclasses.replace(binds, features=fuse.features))
    messages = [p.message for p in refused.value.problems]
    assert [m.split(":", 1)[0] for m in messages] == ["binds", "features"]
    assert "root@pam!ci (an API token)" in messages[0] and "(fuse)" in messages[1]
    with pytest.raises(InvalidRequest, match="signs in as ops@pve"):
        check_root_only(other, template, binds)
    privileged = dataclasses.replace(template, unprivileged=False)
    with pytest.raises(InvalidRequest, match=r"privileged container \(nesting\)"):
        check_root_only(token, privileged, Surface())


def test_a_container_with_a_bind_mount_is_never_snapshotted() -> None:
    # PVE's has_feature('snapshot') fails for a host path ("snapshot feature
    # is not available"): a snapshot, or a change that would roll back to its
    # safety snapshot, is refused first; a change that keeps its failure runs
    from provisioner.request_checks import ActionRefused, check_snapshot_possible

    request = StoredRequest(binds=[{"source": "/srv/shared/site", "path": "/mnt/site"}])
    ct = Container(id="c" * 36, hostname="b1", lifecycle=Lifecycle.READY, vmid=101,
                   request=request.to_dict())  # fmt: skip
    with pytest.raises(ActionRefused, match=r"cannot snapshot: .*bind mounts \(/mnt/site\)"):
        check_snapshot_possible(ct, "snapshot", {"name": "s1"})
    for action in ("resync", "set"):
        with pytest.raises(ActionRefused, match="ask with on_failure=keep"):
            check_snapshot_possible(ct, action, {"on_failure": "rollback"})
        check_snapshot_possible(ct, action, {"on_failure": "keep"})
    check_snapshot_possible(ct, "start", None)
    plain = Container(id="d" * 36, hostname="p1", lifecycle=Lifecycle.READY, vmid=102,
                      request=StoredRequest().to_dict())  # fmt: skip
    check_snapshot_possible(plain, "snapshot", {"name": "s1"})
