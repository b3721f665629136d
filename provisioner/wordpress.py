"""A WordPress site copied through its REST API: the rules (pure; no I/O).

The sandbox import reads a live site's content (``/wp/v2/...`` with
``context=edit``) and writes it into a sandbox's.  What it needs decided
without a network lives here: which media the content references (only
those are downloaded), the order pages are written in (parents first),
how the source's URLs become the sandbox's, the permalink structure the
site uses (the REST API does not publish it) and the progress figures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# content's references to attachments: <img class="wp-image-12">, blocks'
# {"id":12}, and [gallery ids="1,2"]
_WP_IMAGE = re.compile(r"\bwp-image-(\d+)\b")
_BLOCK_ID = re.compile(
    r"<!-- wp:(?:image|cover|media-text|video|audio|file)\s+\{[^}]*?\"(?:id|mediaId)\":(\d+)"
)
_GALLERY_IDS = re.compile(r"\[gallery[^\]]*\bids=\"([\d,\s]+)\"")
_TOKENS = (("%year%", r"\d{4}"), ("%monthnum%", r"\d{2}"), ("%day%", r"\d{2}"),
           ("%hour%", r"\d{2}"), ("%minute%", r"\d{2}"), ("%second%", r"\d{2}"))  # fmt: skip


def text_of(value: Any) -> str:
    """A REST field's text: ``{"raw": ..., "rendered": ...}`` gives raw
    (``context=edit``) or rendered; a string is itself."""
    if isinstance(value, Mapping):
        raw = value.get("raw")
        return str(raw if raw is not None else value.get("rendered") or "")
    return "" if value is None else str(value)


def media_urls(item: Mapping[str, Any]) -> list[str]:
    """Every URL of one attachment: the original and each generated size."""
    urls = [str(item["source_url"])] if item.get("source_url") else []
    sizes = (item.get("media_details") or {}).get("sizes") or {}
    for size in sizes.values():
        url = size.get("source_url") if isinstance(size, Mapping) else None
        if url and url not in urls:
            urls.append(str(url))
    return urls


def referenced_media(entries: Iterable[Mapping[str, Any]],
                     media: Mapping[int, Mapping[str, Any]]) -> list[int]:  # fmt: skip
    """The ids of the attachments the posts and pages use: featured images,
    images, blocks and galleries naming an id, and any of an attachment's
    URLs in the content.  Only these are downloaded; ids that name no known
    attachment are left out (the caller warns about missing ones)."""
    found: set[int] = set()
    by_url = {url: mid for mid, item in media.items() for url in media_urls(item)}
    for entry in entries:
        featured = entry.get("featured_media") or 0
        if featured:
            found.add(int(featured))
        content = text_of(entry.get("content")) + "\n" + text_of(entry.get("excerpt"))
        found.update(int(m) for m in _WP_IMAGE.findall(content))
        found.update(int(m) for m in _BLOCK_ID.findall(content))
        for ids in _GALLERY_IDS.findall(content):
            found.update(int(i) for i in re.findall(r"\d+", ids))
        for url, mid in by_url.items():
            if url in content:
                found.add(mid)
    return sorted(found)


def missing_references(entries: Iterable[Mapping[str, Any]],
                       media: Mapping[int, Mapping[str, Any]]) -> dict[int, list[str]]:  # fmt: skip
    """Attachment ids the content names that the site does not list, each
    with the slugs of the posts naming it (for a warning naming the item)."""
    missing: dict[int, list[str]] = {}
    for entry in entries:
        for mid in referenced_media([entry], {}):
            if mid not in media:
                missing.setdefault(mid, []).append(str(entry.get("slug") or entry.get("id")))
    return missing


def parents_first(pages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pages ordered so that each comes after its parent (a parent not in
    the list counts as none); the source's order is kept otherwise."""
    ids = {int(p["id"]) for p in pages}
    placed: set[int] = set()
    ordered: list[Mapping[str, Any]] = []
    pending = list(pages)
    while pending:
        rest = []
        for page in pending:
            parent = int(page.get("parent") or 0)
            if parent == 0 or parent not in ids or parent in placed:
                ordered.append(page)
                placed.add(int(page["id"]))
            else:
                rest.append(page)
        if len(rest) == len(pending):  # a cycle: the source's data is odd; keep them all
            ordered.extend(rest)
            break
        pending = rest
    return ordered


def site_base(url: str) -> str:
    """``https://host[:port][/path]`` without a trailing ``/``."""
    return url.rstrip("/")


def _variants(base: str) -> list[str]:
    """The forms a site's base URL takes in content: https and http, and
    JSON-escaped (``https:\\/\\/host``) in block attributes."""
    parts = urlsplit(base)
    rest = base[len(parts.scheme) + 3 :]
    plain = [f"https://{rest}", f"http://{rest}"]
    return plain + [u.replace("/", "\\/") for u in plain]


@dataclass
class UrlMap:
    """How the source's URLs become the sandbox's: each attachment URL to
    the copy's (longest first, so a size's URL is not cut by its
    original's), then the site's base URL."""

    source_base: str
    target_base: str
    urls: dict[str, str] = field(default_factory=dict)

    def add_media(self, source: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        """Map one attachment's URLs: the original to the original, each
        size to the copy's size of the same name (or its original)."""
        new_original = str(target.get("source_url") or "")
        if source.get("source_url") and new_original:
            self.urls[str(source["source_url"])] = new_original
        new_sizes = (target.get("media_details") or {}).get("sizes") or {}
        for name, size in ((source.get("media_details") or {}).get("sizes") or {}).items():
            if not isinstance(size, Mapping) or not size.get("source_url"):
                continue
            match = new_sizes.get(name)
            url = match.get("source_url") if isinstance(match, Mapping) else None
            self.urls[str(size["source_url"])] = str(url or new_original)

    def rewrite(self, text: str) -> str:
        """``text`` with every mapped URL replaced, then the base URL."""
        if not text:
            return text
        for old in sorted(self.urls, key=len, reverse=True):
            if old in text:
                text = text.replace(old, self.urls[old])
            escaped = old.replace("/", "\\/")
            if escaped in text:
                text = text.replace(escaped, self.urls[old].replace("/", "\\/"))
        target = self.target_base
        for variant in _variants(self.source_base):
            if variant in text:
                new = target.replace("/", "\\/") if "\\/" in variant else target
                text = text.replace(variant, new)
        return text


def permalink_structure(link: str, home: str, post: Mapping[str, Any]) -> str:
    """The site's permalink structure, read off one published post's link
    (the REST API does not publish ``permalink_structure``): ``""`` for
    plain links (``?p=12``), else e.g. ``/%year%/%monthnum%/%postname%/``."""
    if not link.startswith(site_base(home)):
        return ""
    path = link[len(site_base(home)) :]
    if not path or path.startswith("/?") or path.startswith("?"):
        return ""
    date = str(post.get("date") or "")
    values = {"%postname%": str(post.get("slug") or ""), "%post_id%": str(post.get("id") or "")}
    m = re.match(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})", date)
    if m:
        for (token, _), value in zip(_TOKENS, m.groups(), strict=True):
            values[token] = value
    segments = []
    for segment in path.split("/"):
        found = next((t for t, v in values.items() if v and segment == v), None)
        if found is None:
            # the category base (/%category%/) or a fixed prefix such as /blog/
            found = "%category%" if segment in _slugs(post.get("category_slugs")) else segment
        segments.append(found)
    return "/".join(segments)


def _slugs(value: Any) -> set[str]:
    return {str(v) for v in value} if isinstance(value, list | tuple) else set()


@dataclass
class Progress:
    """Items and bytes of an import, with an ETA from the rates so far."""

    items_total: int
    bytes_total: int
    items_done: int = 0
    bytes_done: int = 0

    def fraction(self) -> float:
        """Done, 0-1: items and bytes weighted alike (a site of large media
        spends its time on bytes, one of many posts on items)."""
        parts = []
        if self.items_total:
            parts.append(min(1.0, self.items_done / self.items_total))
        if self.bytes_total:
            parts.append(min(1.0, self.bytes_done / self.bytes_total))
        return sum(parts) / len(parts) if parts else 1.0

    def eta(self, elapsed: float) -> float | None:
        """Seconds left at the pace so far; None until there is a pace."""
        done = self.fraction()
        if done <= 0 or elapsed <= 0:
            return None
        return max(0.0, elapsed * (1 - done) / done)

    def describe(self, elapsed: float) -> str:
        """``42/170 items, 3.1/12.0 MiB, about 40s left``."""
        mib = 1024 * 1024
        text = (f"{self.items_done}/{self.items_total} items, "
                f"{self.bytes_done / mib:.1f}/{self.bytes_total / mib:.1f} MiB")  # fmt: skip
        eta = self.eta(elapsed)
        if eta is not None and self.fraction() < 1:
            text += f", about {eta:.0f}s left"
        return text
