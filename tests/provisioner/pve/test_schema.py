"""Tests for provisioner.pve.schema and provisioner.pve.formats: PVE's parameter rules and wording."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.pve import formats
from provisioner.pve.schema import (
    ApiSchema,
    ParameterError,
    format_property_string,
    iter_indexed,
    load_api_schema,
    parse_property_string,
    split_indexed,
)

CREATE = "/nodes/{node}/lxc"
MISSING = "property is missing and it is not optional"
NOT_DEFINED = (
    "property is not defined in schema and the schema does not allow additional properties"
)

GOOD_CREATE: dict[str, object] = {
    "node": "pve",
    "vmid": "100",
    "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
    "net0": "name=eth0,bridge=vmbr0,ip=dhcp,hwaddr=BC:24:11:AA:BB:CC",
    "rootfs": "local-lvm:8",
    "features": "nesting=1",
    "unprivileged": "1",
    "password": "secret1",
    "ssh-public-keys": "ssh-ed25519 AAAA... x",
}


@pytest.fixture(scope="module")
def api() -> ApiSchema:
    return load_api_schema()


def create_errors(api: ApiSchema, **changes: object) -> dict[str, str]:
    """Validate GOOD_CREATE with changes (None removes a key) and return the errors."""
    params = {**GOOD_CREATE, **changes}
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(ParameterError) as exc:
        api.validate("POST", CREATE, params)
    return exc.value.errors


def mini_schema(properties: dict[str, Any], additional: int = 0) -> ApiSchema:
    params = {"additionalProperties": additional, "properties": properties}
    return ApiSchema({"/t": {"POST": {"parameters": params}}})


# --- named formats -------------------------------------------------------------------------

FORMAT_CASES: list[tuple[str, str, str | None]] = [
    # (format, value, expected error or None)
    ("pve-node", "pve-1", None),
    ("pve-node", "-pve", "value does not look like a valid node name"),
    ("pve-vmid", "100", None),
    ("pve-vmid", "99", "value does not look like a valid VM ID"),
    ("pve-vmid", "0100", "value does not look like a valid VM ID"),
    ("pve-storage-id", "local-lvm", None),
    ("pve-storage-id", "local lvm", "storage ID 'local lvm' contains illegal characters"),
    ("pve-storage-id", "local-", "storage ID 'local-' contains illegal characters"),
    ("pve-configid", "snap_1-a", None),
    ("pve-configid", "1snap", "invalid configuration ID '1snap'"),
    ("pve-configid", "s", "invalid configuration ID 's'"),
    ("pve-lxc-mp-string", "local-lvm:8", None),
    ("pve-lxc-mp-string", "/mnt/data", None),
    ("pve-lxc-mp-string", "/mnt/../etc", "/mnt/../etc contains illegal character sequences"),
    ("pve-lxc-mp-string", "/mnt/.", "/mnt/. contains illegal character sequences"),
    ("pve-lxc-mp-string", "../x", "../x contains illegal character sequences"),
    ("pve-poolid", "prod", None),
    ("pve-poolid", "prod/web/a", None),
    ("pve-poolid", "pro d", "pool name 'pro d' contains invalid characters"),
    ("pve-poolid", "a/b/c/d", "pool name 'a/b/c/d' nested too deeply (max levels = 3)"),
    ("pve-volume-id", "local:vztmpl/debian.tar.zst", None),
    ("pve-volume-id", "vztmpl/debian.tar.zst", "unable to parse volume ID 'vztmpl/debian.tar.zst'"),
    ("disk-size", "8G", None),
    ("disk-size", "1.5T", None),
    ("disk-size", "8GB", "value does not look like a valid disk size: 8GB"),
    ("ipv4", "192.168.1.254", None),
    ("ipv4", "192.168.1.256", "value does not look like a valid IPv4 address"),
    ("ipv6", "fe80::1", None),
    ("ipv6", "2001:db8::10.0.0.1", None),
    ("ipv6", "1::2::3", "value does not look like a valid IPv6 address"),
    ("pve-iface", "vmbr0", None),
    ("pve-iface", "eth0.100", None),
    ("pve-iface", "0eth", "invalid network interface name '0eth'"),
    ("pve-iface-list", "eth0 eth1,eth2;eth3", None),
    ("pve-iface-list", "eth0 e", "invalid network interface name 'e'"),
    ("dns-name", "ct-1.example.com", None),
    ("dns-name", "ct_1", "value does not look like a valid DNS name"),
    ("dns-name", "a..b", "value does not look like a valid DNS name"),
    ("pve-lxc-dev-string", "/dev/ttyUSB0", None),
    ("pve-lxc-dev-string", "/tmp/x", "/tmp/x is not a valid device path"),
    ("pve-lxc-dev-string", "/dev/../etc", "/dev/../etc is not a valid device path"),
    ("lxc-ip-with-ll-iface-list", "1.1.1.1 fe80::1%eth0,2001:db8::1", None),
    (
        "lxc-ip-with-ll-iface-list",
        "1.1.1.1 dns.example",
        "value does not look like a valid IP address",
    ),
    ("lxc-ip-with-ll-iface", "fe80::1%0", "value does not look like a valid IP address"),
    ("mac-addr", "BC:24:11:aa:bb:cc", None),
    ("mac-addr", "01:24:11:AA:BB:CC", "value does not look like a valid unicast MAC address"),
    ("mac-addr", "BC-24-11-AA-BB-CC", "value does not look like a valid unicast MAC address"),
    ("pve-ipv4-config", "dhcp", None),
    ("pve-ipv4-config", "manual", None),
    ("pve-ipv4-config", "10.0.0.5/24", None),
    ("pve-ipv4-config", "auto", "value does not look like a valid ipv4 network configuration"),
    ("pve-ipv4-config", "10.0.0.5", "value does not look like a valid ipv4 network configuration"),
    (
        "pve-ipv4-config",
        "10.0.0.5/33",
        "value does not look like a valid ipv4 network configuration",
    ),
    ("pve-ipv6-config", "auto", None),
    ("pve-ipv6-config", "dhcp", None),
    ("pve-ipv6-config", "manual", None),
    ("pve-ipv6-config", "2001:db8::5/64", None),
    (
        "pve-ipv6-config",
        "2001:db8::5",
        "value does not look like a valid ipv6 network configuration",
    ),
    ("dns-name-list", "example.com; lan", None),
    ("dns-name-list", "example.com bad_name", "value does not look like a valid DNS name"),
    ("pve-startup-order", "order=1,up=30,down=10", None),
    ("pve-startup-order", "2", None),
    ("pve-startup-order", "0", "unable to parse startup options"),
    ("pve-startup-order", "order=x", "unable to parse startup options"),
    ("pve-tag-list", "web;prod db", None),
    ("pve-tag-list", "web,pr!od", "invalid characters in tag"),
    ("pve-ct-timezone", "Europe/Vienna", None),
    ("pve-ct-timezone", "host", None),
    ("pve-ct-timezone", "UTC", None),
    ("pve-ct-timezone", "Mars/Olympus", "invalid time zone 'Mars/Olympus'"),
    ("pve-configid-list", "net0,mp1 unused2", None),
    ("pve-configid-list", "net0,-x", "invalid configuration ID '-x'"),
    ("pve-storage-content", "vztmpl", None),
    ("pve-storage-content", "vzdump", "invalid content type 'vzdump'"),
    ("pve-storage-content-list", "images,rootdir", None),
    ("pve-storage-content-list", "images,disk", "invalid content type 'disk'"),
    ("pve-priv-list", "VM.Audit,Datastore.AllocateSpace", None),
    ("pve-priv", "VM.Fly", "invalid privilege 'VM.Fly'"),
    ("pve-realm", "pam", None),
    ("pve-realm", "p", "value does not look like a valid realm"),
    ("pve-vlan-id-or-range-list", "2-100 200;4094", None),
    ("pve-vlan-id-or-range", "1", "invalid VLAN tag '1'"),
    ("pve-vlan-id-or-range", "10-4095", "invalid VLAN tag '4095'"),
    ("pve-vlan-id-or-range", "20-10", "VLAN range must go from lower to higher tag '20-10'"),
    ("pve-vlan-id-or-range", "x", "invalid VLAN configuration 'x'"),
    ("CIDRv4", "10.0.0.0/8", None),
    ("CIDRv4", "10.0.0.0/7", "value does not look like a valid IPv4 CIDR network"),
    ("CIDRv6", "2001:db8::/64", None),
    ("CIDRv6", "2001:db8::/129", "value does not look like a valid IPv6 CIDR network"),
    ("ipv4mask", "255.255.255.0", None),
    ("ipv4mask", "255.0.255.0", "value does not look like a valid IP netmask"),
    ("pve-task-status-type-list", "ok,ERROR warning", None),
    ("pve-task-status-type-list", "ok,failed", "invalid status 'failed'"),
    ("pve-storage-id-list", "local,local-lvm", None),
    ("pve-storage-id-list", "local,9bad", "storage ID '9bad' contains illegal characters"),
    ("pve-vmid-list", "100,101 102", None),
    ("pve-vmid-list", "100,12", "value does not look like a valid VM ID"),
]


@pytest.mark.parametrize(("fmt", "value", "error"), FORMAT_CASES)
def test_named_format(fmt: str, value: str, error: str | None) -> None:
    if error is None:
        formats.check_format(fmt, value)
    else:
        with pytest.raises(formats.FormatError) as exc:
            formats.check_format(fmt, value)
        assert str(exc.value) == error


def test_every_format_used_by_the_schema_is_covered(api: ApiSchema) -> None:
    used: set[str] = set()
    for template in api.templates:
        for method in api.methods_for(template):
            props = api.method_info(method, template).get("parameters", {}).get("properties", {})
            for schema in props.values():
                fmt = schema.get("format")
                subs = fmt.values() if isinstance(fmt, dict) else [schema]
                used |= {s["format"] for s in subs if isinstance(s.get("format"), str)}
    assert len(used) == 34
    assert used <= {case[0] for case in FORMAT_CASES}


def test_lists_allow_empty_and_split_like_pve() -> None:
    formats.check_format("pve-vmid-list", "")
    assert formats.split_list(" a, b;c  d ") == ["a", "b", "c", "d"]
    assert formats.split_list("a b\0c") == ["a b", "c"]  # NUL wins over other separators


def test_opt_format_skips_empty_value() -> None:
    formats.check_format("pve-vmid-opt", "")
    with pytest.raises(formats.FormatError):
        formats.check_format("pve-vmid-opt", "5")


def test_unknown_format_raises() -> None:
    with pytest.raises(formats.UnknownFormatError, match="undefined format 'pve-nope'"):
        formats.check_format("pve-nope", "x")


def test_parse_size() -> None:
    assert formats.parse_size("8") == 8
    assert formats.parse_size("4K") == 4096
    assert formats.parse_size("1.5G") == 3 * 2**29
    assert formats.parse_size("8 G") is None


# --- loading and path matching --------------------------------------------------------------


def test_unknown_format_fails_at_load_time() -> None:
    with pytest.raises(formats.UnknownFormatError):
        mini_schema({"x": {"type": "string", "format": "no-such-format"}})
    nested = {"type": "string", "format": {"k": {"type": "string", "format": "nope-list"}}}
    with pytest.raises(formats.UnknownFormatError):
        mini_schema({"x": nested})


def test_unsupported_type_fails_at_load_time() -> None:
    with pytest.raises(ValueError, match="unsupported type"):
        mini_schema({"x": {"type": "array"}})


def test_load_is_cached(api: ApiSchema) -> None:
    assert load_api_schema() is api


def test_match_with_params(api: ApiSchema) -> None:
    assert api.match("POST", "/nodes/pve/lxc/100/status/start") == (
        "/nodes/{node}/lxc/{vmid}/status/start",
        {"node": "pve", "vmid": "100"},
    )
    upid = "UPID:pve:0001E240:00A1B2C3:67000000:vzcreate:100:root@pam:"
    assert api.match("GET", f"/nodes/pve/tasks/{upid}/status") == (
        "/nodes/{node}/tasks/{upid}/status",
        {"node": "pve", "upid": upid},
    )


def test_match_without_params(api: ApiSchema) -> None:
    assert api.match("GET", "/version") == ("/version", {})
    assert api.match("GET", "/cluster/nextid") == ("/cluster/nextid", {})
    assert api.match("GET", "//nodes/") == ("/nodes", {})  # empty fragments are skipped


def test_match_unknown_path_and_method(api: ApiSchema) -> None:
    assert api.match("GET", "/nodes/pve/qemu") is None
    assert api.match("GET", "/nodes/pve/lxc/100/status/start/now") is None
    template, _ = api.match("GET", "/nodes/pve/lxc/100/status/start") or ("", {})
    assert template == "/nodes/{node}/lxc/{vmid}/status/start"
    assert not api.allows("GET", template)  # known path, method not implemented
    assert api.allows("post", template)
    assert api.methods_for("/nodes/{node}/lxc/{vmid}/config") == {"GET", "PUT"}
    assert api.methods_for("/nope") == frozenset()


def test_match_prefers_literal_segments() -> None:
    data: dict[str, dict[str, Any]] = {"/a/{x}": {"GET": {}}, "/a/b": {"GET": {}}}
    api = ApiSchema(data)
    assert api.match("GET", "/a/b") == ("/a/b", {})
    assert api.match("GET", "/a/c") == ("/a/{x}", {"x": "c"})


def test_indexed_helpers(api: ApiSchema) -> None:
    assert list(iter_indexed("net[n]"))[-1] == "net31"
    assert len(list(iter_indexed("mp[n]"))) == 256
    assert list(iter_indexed("rootfs")) == ["rootfs"]
    assert split_indexed("net0") == ("net", 0)
    assert split_indexed("dev255") == ("dev", 255)
    assert split_indexed("net32") is None
    assert split_indexed("net01") is None
    assert split_indexed("foo1") is None
    assert api.param_schema("POST", CREATE, "unused7") is not None
    assert api.param_schema("POST", CREATE, "unused256") is None


# --- validate ---------------------------------------------------------------------------------


def test_realistic_create_passes_and_converts(api: ApiSchema) -> None:
    out = api.validate("POST", CREATE, GOOD_CREATE)
    assert out["vmid"] == 100
    assert out["unprivileged"] is True
    assert out["node"] == "pve"
    assert out["net0"] == GOOD_CREATE["net0"]  # property strings stay strings
    assert out["features"] == "nesting=1"
    assert set(out) == set(GOOD_CREATE)  # no defaults are filled in


def test_create_with_more_options_passes(api: ApiSchema) -> None:
    api.validate(
        "POST",
        CREATE,
        {
            **GOOD_CREATE,
            "hostname": "web-1.example.com",
            "memory": "1024",
            "swap": "0",
            "cores": "2",
            "cpulimit": "1.5",
            "nameserver": "1.1.1.1 2606:4700::1111",
            "searchdomain": "example.com",
            "tags": "web;prod",
            "timezone": "Europe/Berlin",
            "start": "0",
            "onboot": "1",
            "storage": "local-lvm",
            "pool": "prod",
            "net1": "name=eth1,bridge=vmbr1,ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto,tag=20,mtu=1500",
            "mp0": "local-lvm:16,mp=/srv/data,backup=1,mountoptions=noatime;nodev",
            "dev0": "/dev/ttyUSB0,mode=0660,uid=0",
            "unused3": "local-lvm:vm-100-disk-3",
            "startup": "order=2,up=10",
            "restore": "1",
            "unique": "1",
        },
    )


def test_missing_required(api: ApiSchema) -> None:
    assert create_errors(api, ostemplate=None) == {"ostemplate": MISSING}
    assert create_errors(api, node=None, vmid=None) == {"node": MISSING, "vmid": MISSING}


def test_unknown_parameter(api: ApiSchema) -> None:
    assert create_errors(api, colour="blue") == {"colour": NOT_DEFINED}
    assert create_errors(api, net32="name=eth0") == {"net32": NOT_DEFINED}
    assert create_errors(api, mp256="local:1,mp=/a") == {"mp256": NOT_DEFINED}


def test_all_errors_are_reported(api: ApiSchema) -> None:
    errors = create_errors(api, vmid="abc", memory="8", arch="sparc", colour="x")
    assert errors == {
        "vmid": "type check ('integer') failed - got 'abc'",
        "memory": "value must have a minimum value of 16",
        "arch": "value 'sparc' does not have a value in the enumeration "
        "'amd64, i386, arm64, armhf, riscv32, riscv64'",
        "colour": NOT_DEFINED,
    }


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"cores": "1.5"}, {"cores": "type check ('integer') failed - got '1.5'"}),
        ({"cores": " 2"}, {"cores": "type check ('integer') failed - got ' 2'"}),
        ({"cores": "9000"}, {"cores": "value must have a maximum value of 8192"}),
        ({"cores": "0"}, {"cores": "value must have a minimum value of 1"}),
        ({"cpulimit": "lots"}, {"cpulimit": "type check ('number') failed - got 'lots'"}),
        ({"bwlimit": "-1"}, {"bwlimit": "value must have a minimum value of 0"}),
        ({"vmid": "99"}, {"vmid": "invalid format - value does not look like a valid VM ID"}),
        ({"vmid": "-100"}, {"vmid": "invalid format - value does not look like a valid VM ID"}),
        ({"password": "abc"}, {"password": "value must be at least 5 characters long"}),
        ({"hostname": "h" * 256}, {"hostname": "value may only be 255 characters long"}),
        (
            {"hostname": "a_b"},
            {"hostname": "invalid format - value does not look like a valid DNS name"},
        ),
        (
            {"entrypoint": "/sbin/in\x01it"},
            {"entrypoint": "value does not match the regex pattern"},
        ),
        (
            {"storage": "local lvm"},
            {"storage": "invalid format - storage ID 'local lvm' contains illegal characters"},
        ),
        (
            {"timezone": "Nowhere/City"},
            {"timezone": "invalid format - invalid time zone 'Nowhere/City'"},
        ),
        (
            {"nameserver": "dns.example"},
            {"nameserver": "invalid format - value does not look like a valid IP address"},
        ),
        ({"startup": "first"}, {"startup": "invalid format - unable to parse startup options"}),
        ({"unique": "1"}, {"restore": "missing property - 'unique' requires this property"}),
    ],
)
def test_rules_with_pve_messages(
    api: ApiSchema, changes: dict[str, object], expected: dict[str, str]
) -> None:
    assert create_errors(api, **changes) == expected


def test_integer_and_number_syntax(api: ApiSchema) -> None:
    out = api.validate("POST", CREATE, {**GOOD_CREATE, "cores": "+2", "cpulimit": ".5"})
    assert out["cores"] == 2
    assert out["cpulimit"] == 0.5
    for number in ("1.", "1e2", "-0.0"):
        api.validate(
            "PUT",
            "/nodes/{node}/lxc/{vmid}/config",
            {"node": "n", "vmid": "100", "cpulimit": number},
        )


@pytest.mark.parametrize("value", ["True", "true", "yes", "on", "2", "", " 1"])
def test_form_booleans_must_be_0_or_1(api: ApiSchema, value: str) -> None:
    assert create_errors(api, unprivileged=value) == {
        "unprivileged": f"type check ('boolean') failed - got '{value}'"
    }


def test_form_booleans_0_and_1(api: ApiSchema) -> None:
    assert (
        api.validate("POST", CREATE, {**GOOD_CREATE, "unprivileged": "0"})["unprivileged"] is False
    )
    assert api.validate("POST", CREATE, {**GOOD_CREATE, "start": "1"})["start"] is True


def test_json_types(api: ApiSchema) -> None:
    out = api.validate(
        "POST",
        CREATE,
        {
            **GOOD_CREATE,
            "vmid": 101,
            "memory": 2048.0,
            "cpulimit": 2,
            "unprivileged": True,
            "onboot": 0,
            "console": 1,
        },
    )
    assert out["vmid"] == 101 and isinstance(out["vmid"], int)
    assert out["memory"] == 2048 and isinstance(out["memory"], int)
    assert out["cpulimit"] == 2.0 and isinstance(out["cpulimit"], float)
    assert out["unprivileged"] is True
    assert out["onboot"] is False
    assert out["console"] is True


def test_json_type_errors(api: ApiSchema) -> None:
    assert create_errors(api, memory=True) == {
        "memory": "type check ('integer') failed - got JSON::PP::Boolean"
    }
    assert create_errors(api, cores=2.5) == {"cores": "type check ('integer') failed - got '2.5'"}
    assert create_errors(api, onboot=2) == {"onboot": "type check ('boolean') failed - got '2'"}
    assert create_errors(api, hostname=["a"]) == {
        "hostname": "type check ('string') failed - got ARRAY"
    }
    assert create_errors(api, hostname={"a": 1}) == {
        "hostname": "type check ('string') failed - got HASH"
    }


def test_json_null_counts_as_absent(api: ApiSchema) -> None:
    assert "hostname" not in api.validate("POST", CREATE, {**GOOD_CREATE, "hostname": None})
    assert create_errors(api, ostemplate=None, vmid="100") == {"ostemplate": MISSING}


def test_enum_null_means_no_enum(api: ApiSchema) -> None:
    params = {"node": "pve", "storage": "local", "url": "https://x/y.iso", "content": "iso"}
    params |= {"filename": "y.iso", "compression": "anything"}
    out = api.validate("POST", "/nodes/{node}/storage/{storage}/download-url", params)
    assert out["compression"] == "anything"


def test_pattern_is_anchored_and_perl_syntax_translated(api: ApiSchema) -> None:
    url = "/nodes/{node}/storage/{storage}/download-url"
    params = {"node": "pve", "storage": "local", "content": "iso", "filename": "a.iso"}
    with pytest.raises(ParameterError) as exc:
        api.validate("POST", url, {**params, "url": "ftp://x/https://y"})
    assert exc.value.errors == {"url": "value does not match the regex pattern"}
    env = "A=1\0B=two words"
    cfg = "/nodes/{node}/lxc/{vmid}/config"
    assert api.validate("PUT", cfg, {"node": "pve", "vmid": "100", "env": env})["env"] == env


def test_requires_in_both_directions(api: ApiSchema) -> None:
    net = "/nodes/{node}/network"
    base = {"node": "pve", "iface": "vmbr1", "type": "bridge"}
    with pytest.raises(ParameterError) as exc:
        api.validate("POST", net, {**base, "address": "10.0.0.1"})
    assert exc.value.errors == {"netmask": "missing property - 'address' requires this property"}
    api.validate("POST", net, {**base, "address": "10.0.0.1", "netmask": "255.255.255.0"})


def test_two_errors_on_one_key_join_like_perl() -> None:
    api = mini_schema(
        {"a": {"type": "string"}, "b": {"type": "string", "optional": 1, "requires": "a"}}
    )
    with pytest.raises(ParameterError) as exc:
        api.validate("POST", "/t", {"b": "x"})
    # JSONSchema.pm joins with '\n' in single quotes: backslash + n, not a newline.
    assert exc.value.errors == {"a": MISSING + "\\nmissing property - 'b' requires this property"}


def test_additional_properties_allowed_when_schema_says_so() -> None:
    api = mini_schema({"a": {"type": "integer", "optional": 1}}, additional=1)
    assert api.validate("POST", "/t", {"a": "1", "zzz": "whatever"}) == {"a": 1}


def test_undefined_method_raises_key_error(api: ApiSchema) -> None:
    with pytest.raises(KeyError):
        api.validate("PATCH", CREATE, {})


# --- property strings -------------------------------------------------------------------------


def net_format(api: ApiSchema) -> dict[str, Any]:
    schema = api.param_schema("POST", CREATE, "net0")
    assert schema is not None
    return dict(schema["format"])


def test_parse_property_string_converts(api: ApiSchema) -> None:
    out = parse_property_string(
        net_format(api), "name=eth0,firewall=1,tag=10,rate=2.5,ip=dhcp", "net0"
    )
    assert out == {"name": "eth0", "firewall": True, "tag": 10, "rate": 2.5, "ip": "dhcp"}


def test_property_string_booleans_accept_perl_words(api: ApiSchema) -> None:
    out = parse_property_string(net_format(api), "name=eth0,firewall=yes,link_down=off", "net0")
    assert out["firewall"] is True
    assert out["link_down"] is False
    api.validate("POST", CREATE, {**GOOD_CREATE, "features": "nesting=true,keyctl=on"})
    assert create_errors(api, features="nesting=maybe") == {
        "features": "invalid format - format error",
        "features.nesting": "type check ('boolean') failed - got 'maybe'",
    }


def test_property_string_default_key(api: ApiSchema) -> None:
    schema = api.param_schema("POST", CREATE, "rootfs")
    assert schema is not None
    fmt = schema["format"]
    assert parse_property_string(fmt, "local-lvm:8,size=8G", "rootfs") == {
        "volume": "local-lvm:8",
        "size": "8G",
    }
    assert parse_property_string(fmt, "volume=local-lvm:8", "rootfs") == {"volume": "local-lvm:8"}
    with pytest.raises(ParameterError) as exc:
        parse_property_string(fmt, "volume=a:1,b:2", "rootfs")
    assert exc.value.errors == {
        "rootfs": "invalid format - duplicate key in comma-separated list property: volume"
    }
    with pytest.raises(ParameterError) as exc:
        parse_property_string(fmt, "size=8G", "rootfs")
    assert exc.value.errors == {"rootfs": "invalid format - format error", "rootfs.volume": MISSING}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "name=eth0,ip=10.0.0.1",
            {
                "net0": "invalid format - format error",
                "net0.ip": "invalid format - value does not look like a valid ipv4 network configuration",
            },
        ),
        ("bridge=vmbr0,ip=dhcp", {"net0": "invalid format - format error", "net0.name": MISSING}),
        (
            "name=eth0,hwaddr=01:00:00:00:00:01",
            {
                "net0": "invalid format - format error",
                "net0.hwaddr": "invalid format - value does not look like a valid unicast MAC address",
            },
        ),
        (
            "name=eth0,tag=5000,mtu=10",
            {
                "net0": "invalid format - format error",
                "net0.tag": "value must have a maximum value of 4094",
                "net0.mtu": "value must have a minimum value of 64",
            },
        ),
        (
            "name=eth0,type=tap",
            {
                "net0": "invalid format - format error",
                "net0.type": "value 'tap' does not have a value in the enumeration 'veth'",
            },
        ),
        (
            "name=eth 0",
            {
                "net0": "invalid format - format error",
                "net0.name": "value does not match the regex pattern",
            },
        ),
        (
            "name=eth0,foo=1",
            {"net0": "invalid format - invalid key in comma-separated list property: foo"},
        ),
        (
            "name=eth0,name=eth1",
            {"net0": "invalid format - duplicate key in comma-separated list property: name"},
        ),
        (
            "name=eth0,ip=",
            {"net0": "invalid format - missing key in comma-separated list property"},
        ),
        (
            "eth0",
            {
                "net0": "invalid format - value without key, but schema does not define a default key"
            },
        ),
    ],
)
def test_property_string_errors(api: ApiSchema, value: str, expected: dict[str, str]) -> None:
    with pytest.raises(ParameterError) as exc:
        parse_property_string(net_format(api), value, "net0")
    assert exc.value.errors == expected
    assert create_errors(api, net0=value) == expected  # validate reports the same


def test_property_string_errors_on_indexed_mount_point(api: ApiSchema) -> None:
    assert create_errors(api, mp3="local:4,mp=/a/../b,mountoptions=sync") == {
        "mp3": "invalid format - format error",
        "mp3.mp": "invalid format - /a/../b contains illegal character sequences",
        "mp3.mountoptions": "value does not match the regex pattern",
    }


def test_format_property_string(api: ApiSchema) -> None:
    assert format_property_string({"name": "eth0", "bridge": "vmbr0", "firewall": True}) == (
        "bridge=vmbr0,firewall=1,name=eth0"
    )
    assert format_property_string({"size": "8G", "volume": "local:8", "ro": None}, "volume") == (
        "local:8,size=8G"
    )
    rootfs = api.param_schema("POST", CREATE, "rootfs")
    assert rootfs is not None
    text = format_property_string(
        {"volume": "local-lvm:vm-100-disk-0", "size": 8 * 2**30}, fmt=rootfs["format"]
    )
    assert text == "local-lvm:vm-100-disk-0,size=8G"
    fmt = net_format(api)
    assert format_property_string({"ip": "dhcp", "name": "eth0"}, fmt=fmt) == "name=eth0,ip=dhcp"
    with pytest.raises(ValueError, match="illegal value with commas for name"):
        format_property_string({"name": "a,b"})


def test_format_and_parse_round_trip(api: ApiSchema) -> None:
    fmt = net_format(api)
    values = {
        "name": "eth0",
        "bridge": "vmbr0",
        "ip": "dhcp",
        "hwaddr": "BC:24:11:AA:BB:CC",
        "firewall": False,
    }
    assert parse_property_string(fmt, format_property_string(values, fmt=fmt), "net0") == values
