"""The import's own rules, without a site: a media item an earlier attempt
left incomplete is uploaded again."""

from __future__ import annotations

from typing import Any, cast

from pipeline.context import Context
from pipeline.wpimport import SiteCopy
from provisioner.wpapi import WpClient, WpSite, WpTrust


class Target:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, int]] = []

    def delete(self, route: str, item_id: int) -> None:
        self.deleted.append((route, item_id))


class Ctx:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def test_a_media_item_left_incomplete_is_deleted_to_be_uploaded_again() -> None:
    site = WpSite("https://127.0.0.1", "admin", "pw", WpTrust(fingerprint="00" * 32))
    ctx = Ctx()
    copy = SiteCopy(cast(Context, ctx), site, site, "https://127.0.0.1", 1 << 20)
    target = Target()
    whole: dict[str, Any] = {"id": 7, "media_details": {"filesize": 288453}}
    cut: dict[str, Any] = {"id": 8, "media_details": {"filesize": 229376}}
    client = cast(WpClient, target)
    assert copy._complete(client, 13, "media-13", 288453, whole) is whole
    assert copy._complete(client, 13, "media-13", 288453, None) is None
    assert copy._complete(client, 13, "media-13", 0, cut) is cut  # the live site gave no size
    assert target.deleted == [] and ctx.warnings == []
    assert copy._complete(client, 13, "media-13", 288453, cut) is None
    assert target.deleted == [("/wp/v2/media", 8)]
    assert ctx.warnings == ["media #13 'media-13': the sandbox holds 229376 of its 288453 bytes "
                            "(an earlier attempt stopped mid-upload): uploading it again"]  # fmt: skip
