"""``provisioner create`` with the create surface (issue 19): what the
options store, and every bad one refused at once with exit 2, naming the
option (no worker runs here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from sqlalchemy import func, select

from provisioner.db import session_scope
from provisioner.models import AuthKind, Container, Lifecycle, Node
from provisioner.nodes import client_for
from provisioner.secrets.keyfile import load_secret_box
from provisioner.secrets.vault import set_node_secret
from provisioner.stored_request import StoredRequest
from tests.cli.conftest import Cli
from tests.cli.test_containers import one_line_error


@pytest.fixture(autouse=True)
def pools(cli: Cli) -> None:
    """The resource pools these requests name exist on the simulator (a
    pool is checked at submit, against GET /pools)."""
    box = load_secret_box(cli.settings.secret_key, cli.settings.secret_key_file)
    with cli.factory() as session:
        node = session.scalars(select(Node).where(Node.name == "sim")).one()
        with client_for(node, box) as pve:
            for pool in {"customers", "databases"} - set(pve.pools()):
                pve._request("POST", "/pools", {"poolid": pool})


def sign_in_as_root(cli: Cli) -> None:
    """Make node "sim" sign in with root@pam's password: PVE lets only root@pam
    itself set bind mounts and feature flags other than nesting."""
    box = load_secret_box(cli.settings.secret_key, cli.settings.secret_key_file)
    with session_scope(cli.factory) as session:
        node = session.scalars(select(Node).where(Node.name == "sim")).one()
        node.auth_kind, node.pve_user, node.token_name = AuthKind.PASSWORD, "root@pam", None
        set_node_secret(box, node, cli.sim["password"])


def test_root_only_options_through_a_token_are_refused_naming_them(cli: Cli) -> None:
    result = cli("create", "-t", "debian-base", "--node", "sim", "-H", "token-1",
                 "--bind", "/srv/shared/site:/mnt/site", "--feature", "fuse=1",
                 PROVISIONER_BIND_MOUNT_ALLOW="/srv/shared")  # fmt: skip
    assert result.exit_code == 2, result.output
    line = one_line_error(result.stderr)
    assert "--bind: Proxmox VE allows bind mounts only to root@pam signed in" in line
    assert "--feature: Proxmox VE allows feature flags other than nesting (fuse)" in line
    assert "(an API token)" in line
    with cli.factory() as session:
        assert session.scalar(select(func.count()).select_from(Container)) == 0


def test_create_stores_every_option_of_the_surface(cli: Cli) -> None:
    sign_in_as_root(cli)
    result = cli("create", "-t", "debian-base", "--node", "sim", "-H", "files-1",
                 "--ip6", "2001:db8::10/64", "--gateway6", "2001:db8::1", "--vlan", "20",
                 "--firewall", "--nic", "ip=dhcp,ip6=auto,vlan=30,firewall=1",
                 "--nic", "ip6=2001:db8:1::5/64", "--nameserver", "198.18.0.1",
                 "--searchdomain", "example.com", "--tag", "files", "--tag", "eu",
                 "--pool", "customers", "--onboot", "--startup", "order=2,up=30",
                 "--mount", "/data:2G", "--mount", "/srv/db:1,backup=0,quota=1,acl=1",
                 "--bind", "/srv/shared/site:/mnt/site,ro", "--feature", "nesting=1",
                 "--feature", "mknod=1",
                 PROVISIONER_BIND_MOUNT_ALLOW="/srv/shared")  # fmt: skip
    assert result.exit_code == 0, result.output
    request = cli.container(result.stdout.strip()).request
    assert request["version"] == 2
    stored = StoredRequest.from_dict(request)
    assert (stored.ip6, stored.gateway6, stored.vlan, stored.firewall) == (
        "2001:db8::10/64", "2001:db8::1", 20, True)  # fmt: skip
    assert stored.nics == [{"ip": "dhcp", "ip6": "auto", "vlan": 30, "firewall": True},
                           {"ip": None, "ip6": "2001:db8:1::5/64"}]  # fmt: skip
    assert (stored.nameserver, stored.searchdomain, stored.tags, stored.pool) == (
        "198.18.0.1", "example.com", ["files", "eu"], "customers")  # fmt: skip
    assert (stored.onboot, stored.startup) == (True, "order=2,up=30")
    assert stored.mounts == [{"path": "/data", "size": 2, "backup": True},
                             {"path": "/srv/db", "size": 1, "backup": False, "quota": True,
                              "acl": True}]  # fmt: skip
    assert stored.binds == [{"source": "/srv/shared/site", "path": "/mnt/site", "ro": True}]
    assert stored.features == {"nesting": True, "mknod": True}
    shown = cli("show", result.stdout.strip(), "--no-live")
    assert shown.exit_code == 0, shown.output
    for line in ("eth0: ip6=2001:db8::10/64 gateway6=2001:db8::1 vlan=20 firewall",
                 "eth1: ip=dhcp ip6=auto vlan=30 firewall", "eth2: ip6=2001:db8:1::5/64",
                 "volume: /data 2 GiB (backup=1)",
                 "volume: /srv/db 1 GiB (backup=0, quota=1, acl=1)",
                 "bind mount: /srv/shared/site -> /mnt/site (read-only)",
                 "features: nesting=1, mknod=1", "onboot: yes", "startup: order=2,up=30"):  # fmt: skip
        assert line in re.sub(r":\s+", ": ", shown.stdout), shown.stdout


def test_create_without_the_surface_stores_the_old_shape(cli: Cli) -> None:
    result = cli("create", "-t", "debian-base", "--node", "sim", "-H", "plain-1")
    assert result.exit_code == 0, result.output
    request = cli.container(result.stdout.strip()).request
    assert request["version"] == 1 and "mounts" not in request


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--vlan", "4095"), "--vlan: must be a VLAN tag from 1 to 4094, got 4095"),
        (("--ip6", "2001:db8::10"), "--ip6: must be 'auto' (SLAAC), 'dhcp' or an IPv6 address"),
        (("--ip6", "auto", "--gateway6", "2001:db8::1"), "--gateway6: only applies to a static"),
        (("--nic", "vlan=0"), "--nic: nics[0].vlan: must be an integer from 1 to 4094"),
        (("--nic", "vmbr1"), "--nic: nics[0]: expected key=value, got 'vmbr1'"),
        (("--mount", "/etc:2G"), "--mount: mounts[0].path: /etc is a system directory"),
        (("--mount", "/data:0"), "--mount: mounts[0].size: must be a size from 1 to"),
        (("--mount", "/data"), "--mount: mounts[0]: expected /path:SIZE"),
        (("--bind", "/etc:/mnt/etc"), "--bind: binds[0].source: host path /etc is not under "
                                      "an allowed prefix (PROVISIONER_BIND_MOUNT_ALLOW: /srv/shared)"),
        (("--bind", "/srv/shared/../../etc:/mnt/etc"), "--bind: binds[0].source: must not "
                                                       "contain '..'"),
        (("--feature", "privileged=1"), "--feature: features.privileged: unknown feature"),
        (("--startup", "first"), "--startup: expected key=value"),
        (("--tag", "Prod"), "--tag: 'Prod' is not a PVE tag"),
        (("--nameserver", "dns.example"), "--nameserver: 'dns.example' is not an IP address"),
        (("--pool", "a pool"), "--pool: must be 1-64 letters"),
        (("--nic", "bridge=vmbr7"), "has no bridge 'vmbr7'; its bridges: "),
        (("--mount", "/data:2,storage=nvme"), "has no storage 'nvme'; storages that can: "),
        (("--nic", "ip=dhcp,vlan=0", "--nic", "bridge=vmbr7"), "--nic: nics[0].vlan: must be"),
    ],
)  # fmt: skip
def test_a_bad_option_exits_2_naming_it(cli: Cli, args: tuple[str, ...], expected: str) -> None:
    result = cli("create", "-t", "debian-base", "--node", "sim", "-H", "bad-1", *args,
                 PROVISIONER_BIND_MOUNT_ALLOW="/srv/shared")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert expected in one_line_error(result.stderr)
    assert result.stdout == ""


def test_the_node_is_asked_for_further_bridges_and_volume_storages(cli: Cli) -> None:
    result = cli("create", "-t", "debian-base", "--node", "sim", "-H", "bad-3",
                 "--nic", "ip=dhcp", "--nic", "bridge=vmbr7", "--mount", "/data:2,storage=nvme")  # fmt: skip
    assert result.exit_code == 2, result.output
    line = one_line_error(result.stderr)
    assert "--nic: nics[1].bridge: node " in line and "has no bridge 'vmbr7'" in line
    assert "--mount: mounts[0].storage: node " in line and "has no storage 'nvme'" in line


def test_every_bad_option_is_named_on_one_line(cli: Cli) -> None:
    result = cli("create", "-t", "debian-base", "--node", "sim", "-H", "bad-2", "--vlan", "0",
                 "--mount", "/proc:1", "--bind", "/srv/shared:/mnt/x")  # fmt: skip
    assert result.exit_code == 2, result.output
    line = one_line_error(result.stderr)
    assert "--vlan: " in line and "--mount: mounts[0].path: " in line
    assert ("--bind: binds[0].source: bind mounts are not allowed here (/srv/shared): "
            "PROVISIONER_BIND_MOUNT_ALLOW lists no host path") in line  # fmt: skip


def test_the_documented_example_is_accepted(cli: Cli) -> None:
    """docs/cli.md, "Networks, volumes and bind mounts": its lines, run."""
    from tests.test_readme_run import shell_blocks, shell_lines

    sign_in_as_root(cli)
    lines = [line for block in shell_blocks("Networks, volumes and bind mounts")
             for line in shell_lines(block)]  # fmt: skip
    assert lines
    for line in lines:
        args = shlex.split(line)
        assert args[0] == "provisioner"
        result = cli(*args[1:], PROVISIONER_BIND_MOUNT_ALLOW="/srv/www")
        assert result.exit_code == 0, result.output
        stored = StoredRequest.from_dict(cli.container(result.stdout.strip()).request)
        assert stored.mounts[1] == {"path": "/srv/db", "size": 8, "storage": "local-lvm",
                                    "backup": False, "quota": True, "acl": True}  # fmt: skip


@pytest.mark.parametrize(
    ("surface", "expected"),
    [
        ({"binds": [{"source": "/srv/www/site", "path": "/mnt/site"}]},
         "has bind mounts (/srv/www/site): Proxmox VE cannot clone a container with bind mounts"),
        ({"nics": [{"ip": "198.18.0.150/24"}]},
         "has further interfaces with static addresses (eth1: 198.18.0.150/24)"),
    ],
)  # fmt: skip
def test_a_clone_the_source_cannot_give_is_refused_first(cli: Cli, surface: dict[str, object],
                                                         expected: str) -> None:  # fmt: skip
    source = cli.add_container(hostname="src-1", lifecycle=Lifecycle.READY, vmid=990190,
                               request={"version": 2, **surface})  # fmt: skip
    result = cli("clone", source, "-H", "src-1-clone")
    assert result.exit_code == 5, result.output
    assert expected in one_line_error(result.stderr)
    with cli.factory() as session:
        assert session.scalar(select(func.count()).select_from(Container)) == 1


def test_templates_show_lists_the_templates_surface_defaults(cli: Cli) -> None:
    from tests.provisioner.templates.test_surface import TEMPLATE_TOML

    sign_in_as_root(cli)  # the template's mknod is root@pam's

    root = Path(cli.env["PROVISIONER_TEMPLATES_DIR"]) / "store"
    root.mkdir()
    (root / "template.toml").write_text(TEMPLATE_TOML)
    result = cli("templates", "show", "store")
    assert result.exit_code == 0, result.output
    shown = re.sub(r":\s+", ": ", result.stdout)
    for line in ("network: ip6=auto firewall nameserver=198.18.0.1 searchdomain=example.com",
                 "volume: /var/lib/store 4 GiB", "volume: /var/cache/store 1 GiB (no backup)",
                 "onboot: yes", "pool: databases", "startup: order=3,up=20",
                 "features: mknod"):  # fmt: skip
        assert line in shown, result.stdout
    stored = cli("create", "-t", "store", "--node", "sim", "-H", "store-1")
    assert stored.exit_code == 0, stored.output
