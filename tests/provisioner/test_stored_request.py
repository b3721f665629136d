"""The stored request's JSON: round trip, rows written before the version
key, and rows this release cannot read (the views still list them).
Pure: no fixtures."""

from __future__ import annotations

import json

import pytest

from provisioner.errors import PermanentError
from provisioner.models import Container, FailurePolicy, Lifecycle
from provisioner.requests import ProvisionRequest
from provisioner.stored_request import STORED_REQUEST_VERSION, RequestSettings, StoredRequest
from provisioner.views import container_json

# A row exactly as every release before the version key wrote it.
LEGACY_ROW = {
    "vmid": 9170, "cores": 2, "memory": 768, "swap": None, "disk": 4,
    "ip": "198.18.0.170/24", "gateway": "198.18.0.1", "bridge": "vmbr1", "storage": None,
    "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB operator@laptop",
    "variables": {"site_title": "Hello", "workers": 3},
    "secret_variables": {"db_password": "v1:k1:c2VjcmV0"},
}  # fmt: skip


def test_a_stored_request_round_trips_through_json() -> None:
    stored = StoredRequest(vmid=9171, cores=4, ip="dhcp", bridge="vmbr0",
                           variables={"upgrade": False, "message": "line one\nline two"},
                           secret_variables={"db_password": "v1:k1:abc"})  # fmt: skip
    data = json.loads(json.dumps(stored.to_dict()))  # what the JSON column gives back
    assert data["version"] == 1 and STORED_REQUEST_VERSION == 2
    assert StoredRequest.from_dict(data) == stored


def test_a_row_without_a_version_is_version_1() -> None:
    stored = StoredRequest.from_dict(LEGACY_ROW)
    assert stored.version == 1
    assert (stored.vmid, stored.cores, stored.memory, stored.swap, stored.disk) == (
        9170, 2, 768, None, 4)  # fmt: skip
    assert (stored.ip, stored.gateway, stored.bridge, stored.storage) == (
        "198.18.0.170/24", "198.18.0.1", "vmbr1", None)  # fmt: skip
    assert stored.ssh_public_key == LEGACY_ROW["ssh_public_key"]
    assert stored.variables == {"site_title": "Hello", "workers": 3}
    assert stored.secret_variables == {"db_password": "v1:k1:c2VjcmV0"}
    # written again, the same JSON plus the version key
    assert stored.to_dict() == {"version": 1, **LEGACY_ROW}


def test_missing_settings_take_their_defaults_and_unknown_keys_are_ignored() -> None:
    assert StoredRequest.from_dict(None) == StoredRequest.from_dict({}) == StoredRequest()
    stored = StoredRequest.from_dict({"cores": 2, "colour": ["blue"], "variables": None})
    assert stored == StoredRequest(cores=2)
    assert stored.ip == "dhcp" and stored.variables == {} and stored.secret_variables == {}
    assert "colour" not in stored.to_dict()


@pytest.mark.parametrize("version", [3, 0, "1", None])
def test_a_version_this_release_does_not_know_is_refused(version: object) -> None:
    with pytest.raises(PermanentError, match=f"stored request: version {version!r} is not one"):
        StoredRequest.from_dict({**LEGACY_ROW, "version": version})


def test_the_shown_settings_keep_their_order() -> None:
    assert list(StoredRequest.from_dict(LEGACY_ROW).settings_json()) == [
        "vmid", "cores", "memory", "swap", "disk", "ip", "gateway", "bridge", "storage",
        "ssh_public_key"]  # fmt: skip


def test_a_provision_request_shares_the_settings_but_not_its_secrets() -> None:
    req = ProvisionRequest(template="nginx", node="pve1", hostname="web1", cores=2,
                           ip="198.18.0.170/24", gateway="198.18.0.1",
                           root_password="hunter2-hunter2", variables={"site_title": "x"})  # fmt: skip
    assert isinstance(req, RequestSettings)
    stored = StoredRequest(**req.settings_json())
    assert stored.settings_json() == req.settings_json()
    assert "hunter2-hunter2" not in json.dumps(stored.to_dict())
    assert set(stored.to_dict()) == {"version", *req.settings_json(), "variables",
                                     "secret_variables"}  # fmt: skip


def test_a_listing_shows_a_record_whose_request_a_newer_release_wrote() -> None:
    ct = Container(id="c1", template="nginx", hostname="web1", request={"version": 99},
                   lifecycle=Lifecycle.READY, failure_policy=FailurePolicy.KEEP, next_seq=5,
                   attempts=1)  # fmt: skip
    shown = container_json(ct, "pve")
    assert shown["request"] == {"unreadable": "stored request: version 99 is not one this "
                                              f"release reads (1 to {STORED_REQUEST_VERSION})"}  # fmt: skip
    assert (shown["variables"], shown["secret_variables"], shown["last_seq"]) == ({}, [], 4)
