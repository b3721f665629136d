"""The create surface (issue 19): each option's rule, its JSON, its PVE
property string, the CLI's short syntax and the template's defaults.

Pure: no fixtures but tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.errors import ConfigError, InvalidRequest
from provisioner.request_checks import field_of
from provisioner.stored_request import StoredRequest
from provisioner.templates.loader import load_template
from provisioner.templates.model import Template, TemplateError
from provisioner.templates.mounts import (
    MountPoint,
    check_bind_source,
    parse_bind_option,
    parse_mount_option,
)
from provisioner.templates.params import (
    CreateRequest,
    NetworkConfig,
    NodeDefaults,
    build_create_params,
)
from provisioner.templates.surface import Surface, parse_feature_option, parse_nic_option

NODE = NodeDefaults(node="pve", storage="local-lvm", bridge="vmbr0", template_storage="local")
ALLOW = ("/srv/shared", "/mnt/data")
TEMPLATE = Template(name="plain", path=Path("/nonexistent"), description="plain",
                    ostemplate="debian-12-standard_12.7-1_amd64.tar.zst")  # fmt: skip
FULL = {
    "ip6": "2001:db8::10/64", "gateway6": "2001:db8::1", "vlan": 20, "firewall": True,
    "nics": [{"bridge": "vmbr1", "ip": "dhcp", "ip6": "auto", "vlan": 30, "firewall": True},
             {"ip": None, "ip6": "2001:db8:1::5/64", "gateway6": "2001:db8:1::1"}],
    "nameserver": "198.18.0.1, 2001:4860:4860::8888", "searchdomain": "example.com lab.example",
    "tags": ["web", "eu"], "pool": "customers", "onboot": True, "startup": "order=2,up=30",
    "mounts": [{"path": "/data", "size": "2G"},
               {"path": "/var/backups/", "size": 4, "storage": "fast", "backup": False,
                "quota": True, "acl": True}],
    "binds": [{"source": "/srv/shared/site", "path": "/mnt/site", "ro": True}],
    "features": {"nesting": True, "mknod": True},
}  # fmt: skip


def params_of(data: dict[str, object], template: Template = TEMPLATE) -> dict[str, str | int]:
    surface = Surface.from_json(data, ALLOW)
    network = NetworkConfig(vlan=surface.vlan, ip6=surface.ip6, gateway6=surface.gateway6,
                            firewall=surface.firewall)  # fmt: skip
    request = CreateRequest(hostname="web-1", network=network, surface=surface)
    return build_create_params(request, template, NODE)


def problems_of(data: dict[str, object], allow: tuple[str, ...] = ALLOW) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        Surface.from_json(data, allow)
    return {field_of(p.message) or "": p.message for p in caught.value.problems}


def test_every_option_becomes_its_pve_parameter() -> None:
    params = params_of(FULL)
    assert params["net0"] == ("name=eth0,bridge=vmbr0,ip=dhcp,ip6=2001:db8::10/64,"
                              "gw6=2001:db8::1,tag=20,firewall=1")  # fmt: skip
    assert params["net1"] == "name=eth1,bridge=vmbr1,ip=dhcp,ip6=auto,tag=30,firewall=1"
    assert params["net2"] == "name=eth2,bridge=vmbr0,ip6=2001:db8:1::5/64,gw6=2001:db8:1::1"
    assert params["nameserver"] == "198.18.0.1 2001:4860:4860::8888"
    assert params["searchdomain"] == "example.com lab.example"
    assert params["tags"] == "provisioner;web;eu"
    assert (params["pool"], params["onboot"], params["startup"]) == (
        "customers",
        1,
        "order=2,up=30",
    )
    assert params["features"] == "nesting=1,mknod=1"
    assert params["mp0"] == "local-lvm:2,mp=/data,backup=1"
    assert params["mp1"] == "fast:4,mp=/var/backups,backup=0,quota=1,acl=1"
    assert params["mp2"] == "/srv/shared/site,mp=/mnt/site,ro=1"
    assert not any(isinstance(v, bool) for v in params.values())


def test_a_request_without_the_surface_has_none_of_its_parameters() -> None:
    params = params_of({})
    assert params["net0"] == "name=eth0,bridge=vmbr0,ip=dhcp"
    for name in ("net1", "nameserver", "searchdomain", "pool", "onboot", "startup", "mp0",
                 "features"):  # fmt: skip
        assert name not in params


def test_the_surface_round_trips_through_the_stored_request() -> None:
    stored = StoredRequest(**FULL)  # type: ignore[arg-type]
    data = json.loads(json.dumps(stored.to_dict()))
    assert data["version"] == 2  # an older release refuses it instead of dropping the volume
    again = StoredRequest.from_dict(data)
    assert again == stored
    assert Surface.from_json(again.settings_json(), None) == Surface.from_json(FULL, ALLOW)
    assert StoredRequest(cores=2).to_dict()["version"] == 1  # without it: the old shape
    assert "mounts" not in StoredRequest(cores=2).to_dict()


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"ip6": "2001:db8::10"}, "ip6", "prefix length"),
        ({"ip6": "auto", "gateway6": "2001:db8::1"}, "gateway6", "only applies to a static ip6"),
        ({"ip6": "2001:db8::10/64", "gateway6": "198.18.0.1"}, "gateway6", "IPv6 address"),
        ({"vlan": 4095}, "vlan", "from 1 to 4094"),
        ({"vlan": 0}, "vlan", "from 1 to 4094"),
        ({"nics": [{"vlan": 5000}]}, "nics[0].vlan", "from 1 to 4094"),
        ({"nics": [{"ip": None}]}, "nics[0].ip", "needs an IPv4 or an IPv6 setting"),
        ({"nics": [{"ip": "dhcp", "gateway": "198.18.0.1"}]}, "nics[0].gateway",
         "only applies to a static ip"),
        ({"nics": [{"bridge": "vmbr 1"}]}, "nics[0].bridge", "letters, digits"),
        ({"nics": [{"colour": "red"}]}, "nics[0].colour", "unknown key"),
        ({"nics": [{}] * 8}, "nics", "at most 7"),
        ({"nameserver": "dns.example"}, "nameserver", "not an IP address"),
        ({"searchdomain": "bad_domain!"}, "searchdomain", "not a DNS domain"),
        ({"tags": ["Prod"]}, "tags", "not a PVE tag"),
        ({"pool": "a pool"}, "pool", "letters, digits"),
        ({"onboot": "maybe"}, "onboot", "true or false"),
        ({"startup": "order=first"}, "startup.order", "integer"),
        ({"startup": "after=2"}, "startup.after", "unknown key"),
        ({"mounts": [{"path": "data", "size": 2}]}, "mounts[0].path", "absolute path"),
        ({"mounts": [{"path": "/data/../etc", "size": 2}]}, "mounts[0].path", "'..'"),
        ({"mounts": [{"path": "/etc", "size": 2}]}, "mounts[0].path", "system directory"),
        ({"mounts": [{"path": "/data,ro=1", "size": 2}]}, "mounts[0].path", "','"),
        ({"mounts": [{"path": "/data", "size": 0}]}, "mounts[0].size", "from 1 to 131072 GiB"),
        ({"mounts": [{"path": "/data", "size": "2X"}]}, "mounts[0].size", "from 1 to"),
        ({"mounts": [{"path": "/data"}]}, "mounts[0].size", "is required"),
        ({"mounts": [{"path": "/data", "size": 2}, {"path": "/data/", "size": 3}]},
         "mounts[1].path", "already the path of mounts[0]"),
        ({"mounts": [{"path": "/d", "size": 1}] * 17}, "mounts", "at most 16"),
        ({"binds": [{"source": "/etc", "path": "/mnt/etc"}]}, "binds[0].source",
         "not under an allowed prefix"),
        ({"binds": [{"source": "/srv/shared/../../etc", "path": "/mnt/x"}]}, "binds[0].source",
         "'..'"),
        ({"binds": [{"source": "/srv/sharedother", "path": "/mnt/x"}]}, "binds[0].source",
         "not under an allowed prefix"),
        ({"binds": [{"source": "srv/shared", "path": "/mnt/x"}]}, "binds[0].source", "absolute"),
        ({"features": {"nesting": "sure"}}, "features.nesting", "true or false"),
        ({"features": {"privileged": True}}, "features.privileged", "unknown feature"),
    ],
)  # fmt: skip
def test_a_bad_option_is_refused_naming_its_field(data: dict[str, object], field: str,
                                                  words: str) -> None:  # fmt: skip
    problems = problems_of(data)
    assert field in problems, problems
    assert words in problems[field]


def test_every_bad_option_is_reported_at_once() -> None:
    problems = problems_of({"vlan": 9999, "ip6": "nope", "mounts": [{"path": "/etc", "size": 1}],
                            "binds": [{"source": "/root", "path": "/mnt/r"}]})  # fmt: skip
    assert set(problems) == {"vlan", "ip6", "mounts[0].path", "binds[0].source"}


def test_bind_mounts_need_the_allow_list_and_name_the_path() -> None:
    problems = problems_of({"binds": [{"source": "/srv/shared/x", "path": "/mnt/x"}]}, ())
    assert "not allowed here (/srv/shared/x)" in problems["binds[0].source"]
    assert "PROVISIONER_BIND_MOUNT_ALLOW" in problems["binds[0].source"]
    assert check_bind_source("b", "/srv/shared//x/./y", ALLOW) == "/srv/shared/x/y"
    assert check_bind_source("b", "/mnt/data", ALLOW) == "/mnt/data"


def test_the_cli_syntax_becomes_the_apis_json() -> None:
    assert parse_nic_option("--nic", "bridge=vmbr1,ip=dhcp,ip6=auto,vlan=20,firewall=1") == {
        "bridge": "vmbr1", "ip": "dhcp", "ip6": "auto", "vlan": 20, "firewall": True}  # fmt: skip
    assert parse_nic_option("--nic", "ip6=2001:db8::5/64,gw6=2001:db8::1,tag=7,firewall") == {
        "ip": None, "ip6": "2001:db8::5/64", "gateway6": "2001:db8::1", "vlan": 7,
        "firewall": True}  # fmt: skip
    assert parse_mount_option("--mount", "/data:2G") == {"path": "/data", "size": 2,
                                                        "backup": True}  # fmt: skip
    assert parse_mount_option("--mount", "/srv/db:1T,backup=0,quota=1,acl=0,storage=fast") == {
        "path": "/srv/db", "size": 1024, "storage": "fast", "backup": False, "quota": True,
        "acl": False}  # fmt: skip
    assert parse_bind_option("--bind", "/srv/shared/site:/mnt/site,ro", ALLOW) == {
        "source": "/srv/shared/site", "path": "/mnt/site", "ro": True}  # fmt: skip
    assert parse_feature_option("nesting=1") == ("nesting", True)
    assert parse_feature_option("fuse=0") == ("fuse", False)
    for parse, text, words in [
        (lambda t: parse_nic_option("--nic", t), "bridge=vmbr1,vlan=9999", "from 1 to 4094"),
        (lambda t: parse_nic_option("--nic", t), "vmbr1", "expected key=value"),
        (lambda t: parse_mount_option("--mount", t), "/data", "expected /path:SIZE"),
        (lambda t: parse_mount_option("--mount", t), "/data:2G,snapshot=1", "unknown key"),
        (lambda t: parse_bind_option("--bind", t, ALLOW), "/srv/shared", "expected /host/path"),
        (lambda t: parse_bind_option("--bind", t, ALLOW), "/etc:/mnt/etc", "/etc is not under"),
        (lambda t: parse_feature_option(t), "nested=1", "unknown feature"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            parse(text)


def test_features_override_the_templates() -> None:
    template = Template(**{**vars(TEMPLATE), "features": type(TEMPLATE.features)(nesting=True,
                                                                               keyctl=True)})  # fmt: skip
    assert params_of({"features": {"keyctl": False, "fuse": True}}, template)["features"] == (
        "nesting=1,fuse=1")  # fmt: skip
    assert "features" not in params_of({"features": {"nesting": False, "keyctl": False}},
                                       template)  # fmt: skip


TEMPLATE_TOML = """\
name = "store"
description = "a template with the create surface's defaults"
ostemplate = "debian-12-standard_12.7-1_amd64.tar.zst"
pool = "databases"
onboot = true
startup = "order=3,up=20"

[features]
mknod = true

[network]
ip6 = "auto"
firewall = true
nameserver = "198.18.0.1"
searchdomain = "example.com"

[[mounts]]
path = "/var/lib/store"
size = 4
backup = true

[[mounts]]
path = "/var/cache/store"
size = 1
backup = false
"""


def write_template(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    (root / "template.toml").write_text(text)
    return root


def test_the_template_gives_defaults_a_request_overrides(tmp_path: Path) -> None:
    template = load_template(write_template(tmp_path, TEMPLATE_TOML))
    assert template.mounts == (MountPoint("/var/lib/store", 4),
                               MountPoint("/var/cache/store", 1, backup=False))  # fmt: skip
    params = params_of({}, template)
    assert params["net0"] == "name=eth0,bridge=vmbr0,ip=dhcp,ip6=auto,firewall=1"
    assert (params["pool"], params["onboot"], params["startup"]) == ("databases", 1,
                                                                    "order=3,up=20")  # fmt: skip
    assert (params["nameserver"], params["searchdomain"]) == ("198.18.0.1", "example.com")
    assert params["features"] == "mknod=1"
    assert params["mp0"] == "local-lvm:4,mp=/var/lib/store,backup=1"
    assert params["mp1"] == "local-lvm:1,mp=/var/cache/store,backup=0"
    # the request's volume at the template's path replaces it; its own come after
    params = params_of({"mounts": [{"path": "/var/lib/store", "size": 20},
                                   {"path": "/data", "size": 2}],
                        "onboot": False, "firewall": False, "pool": "vip"}, template)  # fmt: skip
    assert params["mp0"] == "local-lvm:1,mp=/var/cache/store,backup=0"
    assert params["mp1"] == "local-lvm:20,mp=/var/lib/store,backup=1"
    assert params["mp2"] == "local-lvm:2,mp=/data,backup=1"
    assert (params["onboot"], params["pool"]) == (0, "vip")
    assert "firewall" not in str(params["net0"])


@pytest.mark.parametrize(
    ("good", "bad", "words"),
    [
        ('ip6 = "auto"', 'ip6 = "2001:db8::5/64"', "network.ip6 must be 'auto'"),
        ('nameserver = "198.18.0.1"', 'nameserver = "dns"', "network.nameserver: 'dns' is not"),
        ("size = 4", "size = 0", "mounts[0].size: must be a size"),
        ('path = "/var/lib/store"', 'path = "/etc"', "mounts[0].path: /etc is a system"),
        ('startup = "order=3,up=20"', 'startup = "first"', "startup: expected key=value"),
        ('pool = "databases"', 'pool = "data bases"', "pool: must be 1-64"),
        ("mknod = true", "mknod = 1", "features.mknod must be true or false"),
    ],
)
def test_a_bad_template_default_is_a_template_problem(tmp_path: Path, good: str, bad: str,
                                                      words: str) -> None:  # fmt: skip
    assert good in TEMPLATE_TOML
    with pytest.raises(TemplateError) as caught:
        load_template(write_template(tmp_path, TEMPLATE_TOML.replace(good, bad, 1)))
    assert any(words in p.message and p.line is not None for p in caught.value.problems), (
        caught.value.problems)  # fmt: skip


def test_pve_names_map_to_the_request_fields() -> None:
    assert field_of("invalid container parameters: net2.ip6: invalid format") == "nics[1].ip6"
    assert field_of("invalid container parameters: net0.ip6: invalid format") == "ip6"
    assert field_of("invalid container parameters: net0.tag: bad") == "vlan"
    assert field_of("mounts[2].size: must be a size") == "mounts[2].size"
