"""The simulator's API as a client sees it: auth, envelope, errors,
validation and the read-only endpoints.  Runs against the shared simulator."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ResourceException

from tests.pvesim.helpers import raw, task_log, ticket_api, token_api, token_header, wait_task

pytestmark = pytest.mark.integration
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def expect_error(call: Callable[[], Any], status: int, content: str) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call()
    assert info.value.status_code == status, info.value
    assert content in info.value.content, info.value.content
    return info.value


@pytest.fixture(scope="module")
def api(sim: dict[str, Any]) -> Any:
    return token_api(sim)


def test_no_credentials_is_401(sim: dict[str, Any]) -> None:
    status, reason, body = raw(sim, "GET", "/version")
    assert (status, reason) == (401, "No ticket")
    assert body["data"] is None


def test_bad_token_is_401(sim: dict[str, Any]) -> None:
    bad = {"Authorization": f"PVEAPIToken={sim['token_id']}=00000000-0000-0000-0000-000000000000"}
    status, reason, _ = raw(sim, "GET", "/version", headers=bad)
    assert status == 401 and "invalid token" in reason


def test_token_auth_and_envelope(sim: dict[str, Any]) -> None:
    status, _, body = raw(sim, "GET", "/version", headers=token_header(sim))
    assert status == 200
    assert set(body) == {"data"}
    assert body["data"]["release"] == "9.1"


def test_ticket_login_cookie_and_csrf(sim: dict[str, Any]) -> None:
    form = urllib.parse.urlencode({"username": "root@pam", "password": sim["password"]}).encode()
    status, _, body = raw(sim, "POST", "/access/ticket", data=form,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert status == 200
    ticket, csrf = body["data"]["ticket"], body["data"]["CSRFPreventionToken"]
    assert body["data"]["username"] == "root@pam"
    cookie = {"Cookie": f"PVEAuthCookie={urllib.parse.quote(ticket)}"}
    assert raw(sim, "GET", "/nodes", headers=cookie)[0] == 200
    # a state-changing request with a ticket needs the CSRF token
    put = {**cookie, "Content-Type": "application/x-www-form-urlencoded"}
    status, reason, _ = raw(sim, "POST", "/nodes/pve/lxc", headers=put, data=b"vmid=999")
    assert (status, reason) == (401, "Permission denied - invalid csrf token")
    status, reason, body = raw(sim, "POST", "/nodes/pve/lxc",
                               headers={**put, "CSRFPreventionToken": csrf}, data=b"vmid=999")  # fmt: skip
    assert (
        status == 400
        and body["errors"]["ostemplate"] == "property is missing and it is not optional"
    )


def test_wrong_password_is_401(sim: dict[str, Any]) -> None:
    form = urllib.parse.urlencode({"username": "root@pam", "password": "wrong"}).encode()
    status, reason, _ = raw(sim, "POST", "/access/ticket", data=form,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert (status, reason) == (401, "authentication failure")


def test_proxmoxer_ticket_session(sim: dict[str, Any]) -> None:
    api = ticket_api(sim)
    assert api.version.get()["version"] == "9.1.1"
    assert [n["node"] for n in api.nodes.get()] == [sim["node"]]


def test_unknown_path_is_501(sim: dict[str, Any]) -> None:
    status, reason, _ = raw(sim, "GET", "/nodes/pve/qemu", headers=token_header(sim))
    assert status == 501 and reason == "Method 'GET /nodes/pve/qemu' not implemented"


def test_unknown_node(api: Any) -> None:
    expect_error(lambda: api.nodes("nosuchnode").status.get(), 500, "hostname lookup 'nosuchnode'")


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"vmid": "abc"}, {"vmid": "type check ('integer') failed - got 'abc'"}),
        ({"vmid": 99}, {"vmid": "invalid format - value does not look like a valid VM ID"}),
        ({"memory": 1}, {"memory": "value must have a minimum value of 16"}),
        ({"unprivileged": "True"}, {"unprivileged": "type check ('boolean') failed - got 'True'"}),
        ({"bogus": 1}, {"bogus": "property is not defined in schema and the schema does not "
                                  "allow additional properties"}),
        ({"hostname": "bad_name!"}, {"hostname": "invalid format - value does not look like a valid DNS name"}),
        ({"cmode": "serial"}, {"cmode": "value 'serial' does not have a value in the enumeration "
                                        "'shell, console, tty'"}),
        ({"password": "abc"}, {"password": "value must be at least 5 characters long"}),
        ({"net0": "name=eth0,ip=300.1.1.1/24"},
         {"net0": "invalid format - format error\nnet0.ip: invalid format - value does not look "
                  "like a valid ipv4 network configuration"}),
        ({"ostemplate": None}, {"ostemplate": "property is missing and it is not optional"}),
    ],
)  # fmt: skip
def test_create_validation_errors(api: Any, params: dict[str, Any], errors: dict[str, str]) -> None:
    def guests() -> list[tuple[int, str]]:
        # identity only: the cpu, mem and uptime of other tests' running guests move
        return sorted((int(c["vmid"]), c.get("name", "")) for c in api.nodes("pve").lxc.get())

    before = guests()
    body = {"vmid": 6100, "ostemplate": TEMPLATE, "storage": "local-lvm", **params}
    body = {k: v for k, v in body.items() if v is not None}
    err = expect_error(lambda: api.nodes("pve").lxc.post(**body), 400,
                       "Parameter verification failed.")  # fmt: skip
    assert err.errors == errors
    assert guests() == before  # nothing was written


def test_handler_errors_are_500_with_pve_wording(api: Any) -> None:
    lxc = api.nodes("pve").lxc
    # create_vm's check_and_activate_storage: raise_param_exc on 'storage'
    err = expect_error(lambda: lxc.post(vmid=6101, ostemplate=TEMPLATE), 400,
                       "Parameter verification failed.")  # fmt: skip
    assert err.errors == {"storage": "storage 'local' does not support container directories"}
    expect_error(lambda: lxc.post(vmid=6101, ostemplate="local:vztmpl/nope.tar.zst",
                                  storage="local-lvm"), 500,
                 "volume 'local:vztmpl/nope.tar.zst' does not exist")  # fmt: skip
    expect_error(lambda: lxc(6101).config.get(), 500,
                 "Configuration file 'nodes/pve/lxc/6101.conf' does not exist")  # fmt: skip
    # PVE::API2::LXC::Status vm_stop: check_running, before any task
    expect_error(lambda: lxc(6101).status.stop.post(), 500, "CT 6101 not running")


def test_error_body_shape(sim: dict[str, Any]) -> None:
    status, reason, body = raw(sim, "POST", "/nodes/pve/lxc", data=b"vmid=1",
                               headers={**token_header(sim),
                                        "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert status == 400 and reason == "Parameter verification failed."
    assert body["data"] is None
    assert body["message"] == "Parameter verification failed.\n"
    assert body["errors"]["vmid"] == "invalid format - value does not look like a valid VM ID"


def test_json_bodies_are_accepted(sim: dict[str, Any]) -> None:
    status, _, body = raw(sim, "POST", "/nodes/pve/lxc",
                          data=json.dumps({"vmid": 6102, "unprivileged": True, "memory": 1}).encode(),
                          headers={**token_header(sim), "Content-Type": "application/json"})  # fmt: skip
    assert status == 400
    assert set(body["errors"]) == {"memory", "ostemplate"}  # JSON true is a fine boolean


def test_nextid_reserves_nothing(api: Any) -> None:
    first = api.cluster.nextid.get()
    assert isinstance(first, str) and int(first) >= 100
    assert api.cluster.nextid.get() == first
    assert api.cluster.nextid.get(vmid=123456) == "123456"


def test_node_status_and_resources(api: Any, sim: dict[str, Any]) -> None:
    status = api.nodes("pve").status.get()
    assert status["cpuinfo"]["cpus"] >= 1 and status["memory"]["total"] > 0
    assert status["pveversion"].startswith("pve-manager/9.1")
    resources = api.cluster.resources.get()
    kinds = {r["type"] for r in resources}
    assert {"node", "storage"} <= kinds
    assert all(r["type"] == "storage" for r in api.cluster.resources.get(type="storage"))
    expect_error(lambda: api.cluster.resources.get(type="disk"), 400,
                 "Parameter verification failed.")  # fmt: skip


def test_network_lists_the_bridge(api: Any, sim: dict[str, Any]) -> None:
    bridges = api.nodes("pve").network.get(type="bridge")
    assert [b["iface"] for b in bridges] == ["vmbr0"]
    prefix = sim["subnet"].split("/")[1]
    # as PVE's INotify parses "address <ip>/<prefix>": cidr as written, address and
    # netmask (the prefix length) split from it; every interface has method and method6
    assert {k: bridges[0][k] for k in ("cidr", "address", "netmask", "method", "method6")} == {
        "cidr": f"{sim['gateway']}/{prefix}", "address": sim["gateway"], "netmask": prefix,
        "method": "static", "method6": "static"}  # fmt: skip
    assert bridges[0]["cidr6"] == f"{sim['gateway6']}/64"
    assert api.nodes("pve").network.get(type="any_bridge") == bridges
    assert api.nodes("pve").network.get(type="eth") == []


def test_storages_and_templates(api: Any) -> None:
    storages = {s["storage"]: s for s in api.nodes("pve").storage.get()}
    assert set(storages) == {"local", "local-lvm"}
    assert "vztmpl" in storages["local"]["content"].split(",")
    assert "rootdir" in storages["local-lvm"]["content"].split(",")
    assert storages["local"]["avail"] > 0
    assert [s["storage"] for s in api.nodes("pve").storage.get(content="rootdir")] == ["local-lvm"]
    content = api.nodes("pve").storage("local").content.get(content="vztmpl")
    assert TEMPLATE in [c["volid"] for c in content]
    assert api.nodes("pve").storage("local").status.get()["total"] > 0
    apl = api.nodes("pve").aplinfo.get()
    assert "debian-12-standard_12.7-1_amd64.tar.zst" in [a["template"] for a in apl]


def test_aplinfo_downloads_a_missing_template(api: Any, sim: dict[str, Any]) -> None:
    cache = Path(sim["state_dir"]) / "storage/local/template/cache"
    name = "debian-12-standard_12.7-1_amd64.tar.zst"
    keep = cache / f".{name}.keep"
    shutil.move(cache / name, keep)
    try:
        volids = [c["volid"] for c in api.nodes("pve").storage("local").content.get()]
        assert TEMPLATE not in volids
        expect_error(lambda: api.nodes("pve").aplinfo.post(storage="local-lvm", template=name),
                     500, "does not support templates")  # fmt: skip
        upid = api.nodes("pve").aplinfo.post(storage="local", template=name)
        assert upid.startswith("UPID:pve:") and ":download:" in upid and upid.endswith(":")
        assert wait_task(api, "pve", upid)["exitstatus"] == "OK"
        assert task_log(api, "pve", upid)[-1] == "TASK OK"
        volids = [c["volid"] for c in api.nodes("pve").storage("local").content.get()]
        assert TEMPLATE in volids
    finally:
        if not (cache / name).exists():
            shutil.move(keep, cache / name)
        keep.unlink(missing_ok=True)


@pytest.fixture()
def file_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "tiny.tar.zst").write_bytes(b"not really a template")
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path), **kw)  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_url(api: Any, sim: dict[str, Any], file_server: str) -> None:
    storage = api.nodes("pve").storage("local")
    upid = storage("download-url").post(url=f"{file_server}/tiny.tar.zst", content="vztmpl",
                                        filename="tiny-test.tar.zst")  # fmt: skip
    assert wait_task(api, "pve", upid)["exitstatus"] == "OK"
    target = Path(sim["state_dir"]) / "storage/local/template/cache/tiny-test.tar.zst"
    try:
        assert target.read_bytes() == b"not really a template"
        # anything that is not loopback is refused by the simulator
        upid = storage("download-url").post(url="http://192.0.2.10/x.tar.zst", content="vztmpl",
                                            filename="x.tar.zst")  # fmt: skip
        status = wait_task(api, "pve", upid)
        assert "loopback" in status["exitstatus"]
        assert task_log(api, "pve", upid)[-1].startswith("TASK ERROR:")
    finally:
        target.unlink(missing_ok=True)


def test_task_listing_and_log_paging(api: Any) -> None:
    if not api.nodes("pve").tasks.get(limit=1):  # run alone: make one (the simulator
        # refuses a download from anywhere but loopback, in a task of its own)
        upid = (
            api.nodes("pve")
            .storage("local")("download-url")
            .post(url="http://192.0.2.10/x.tar.zst", content="vztmpl", filename="x.tar.zst")
        )
        wait_task(api, "pve", upid)
    tasks = api.nodes("pve").tasks.get(limit=5)
    assert 1 <= len(tasks) <= 5
    upid = tasks[0]["upid"]
    status = api.nodes("pve").tasks(upid).status.get()
    assert status["status"] == "stopped" and "exitstatus" in status
    full = api.nodes("pve").tasks(upid).log.get(limit=1000)
    assert full[-1]["t"].startswith("TASK ")
    assert [e["n"] for e in full] == list(range(1, len(full) + 1))
    assert api.nodes("pve").tasks(upid).log.get(start=1, limit=1) == full[1:2]
    expect_error(lambda: api.nodes("pve").tasks("UPID:pve:00000001:00000001:00000001:vzstart:1:root@pam:").status.get(),
                 400, "Parameter verification failed.")  # fmt: skip


def test_task_log_limit_zero_total_and_a_tokens_user(api: Any, sim: dict[str, Any]) -> None:
    """PVE::API2::Tasks read_task_log (PVE::Tools::dump_logfile: ``limit=0``
    reads to the end, ``total`` counts every line, a ``start`` past the end
    gives none), node_tasks (``total``) and read_task_status
    (``$convert_token_task``: a token's task shows ``user`` and ``tokenid``)."""
    upid = (
        api.nodes("pve")
        .storage("local")("download-url")
        .post(url="http://192.0.2.10/x.tar.zst", content="vztmpl", filename="x.tar.zst")
    )
    status = wait_task(api, "pve", upid)
    assert (status["user"], status["tokenid"]) == ("root@pam", sim["token_id"].split("!")[1])
    assert "endtime" not in status
    path = f"/nodes/pve/tasks/{urllib.parse.quote(upid)}/log"
    _, _, full = raw(sim, "GET", f"{path}?limit=0", headers=token_header(sim))
    assert full["data"][-1]["t"].startswith("TASK ERROR:")
    assert full["total"] == len(full["data"]) >= 2
    _, _, past = raw(sim, "GET", f"{path}?start=1000", headers=token_header(sim))
    assert past["data"] == [] and past["total"] == full["total"]
    _, _, listed = raw(sim, "GET", "/nodes/pve/tasks?limit=0&typefilter=download",
                       headers=token_header(sim))  # fmt: skip
    assert listed["data"] == [] and listed["total"] >= 1
    mine = api.nodes("pve").tasks.get(typefilter="download", limit=1)[0]
    assert mine["upid"] == upid and mine["tokenid"] == status["tokenid"]
