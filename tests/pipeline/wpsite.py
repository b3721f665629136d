"""A client's live WordPress site for the sandbox tests and bench: seeded
through its REST API, and compared with a sandbox through both sites' REST
APIs."""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from provisioner.wpapi import ALL_STATUSES, WpClient

TIMEZONE = "Europe/Berlin"


def png(width: int, height: int, seed: int) -> bytes:
    """An RGB PNG of noise: about ``3 * width * height`` bytes (noise does
    not compress), a real image WordPress makes its sizes of."""
    rnd = random.Random(seed)
    raw = b"".join(b"\x00" + rnd.randbytes(width * 3) for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))  # fmt: skip

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 1))
            + chunk(b"IEND", b""))  # fmt: skip


@dataclass
class Seeded:
    """What was put on the site (ids by slug)."""

    base: str
    media: dict[str, dict[str, Any]] = field(default_factory=dict)  # slug -> item
    posts: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)  # media no content uses


def seed(wp: WpClient, base: str, *, posts: int = 100, pages: int = 20, media: int = 50,
         media_size: tuple[int, int] = (320, 300),
         extra_media: Sequence[tuple[str, bytes]] = ()) -> Seeded:  # fmt: skip
    """Settings, two authors, nested categories, tags, ``media`` images
    (plus three no content uses, and ``extra_media`` each used by one
    post), pages in a hierarchy (a fifth at the top, four children each)
    and posts with terms, featured images and inline images."""
    done = Seeded(base)
    wp.request("POST", "/wp/v2/settings", body={
        "title": "Acme Live", "description": "Where acme lives", "timezone": TIMEZONE,
        "date_format": "d.m.Y", "start_of_week": 1})  # fmt: skip
    authors = []
    for slug, name, role in (("jane", "Jane Writer", "author"), ("bob", "Bob Editor", "editor")):
        authors.append(wp.create("/wp/v2/users", {
            "username": slug, "name": name, "email": f"{slug}@acme.example", "roles": [role],
            "password": f"pw-{slug}-{random.random()}"})["id"])  # fmt: skip
    cats: dict[str, int] = {}
    for slug, parent in (("news", None), ("events", None), ("local", "events"),
                         ("products", None), ("tools", "products")):  # fmt: skip
        cats[slug] = wp.create("/wp/v2/categories", {
            "name": slug.title(), "slug": slug, "description": f"All about {slug}",
            "parent": cats[parent] if parent else 0})["id"]  # fmt: skip
    tags = [wp.create("/wp/v2/tags", {"name": f"Tag {i}", "slug": f"tag-{i}"})["id"]
            for i in range(10)]  # fmt: skip
    width, height = media_size
    uploads = [(f"media-{i}", png(width, height, i)) for i in range(media + 3)]
    uploads += list(extra_media)
    for slug, data in uploads:
        item = wp.upload(f"{slug}.png", "image/png", data, {
            "slug": slug, "title": f"Picture {slug}", "alt_text": f"alt of {slug}",
            "caption": f"caption of {slug}"})  # fmt: skip
        done.media[slug] = item
    done.unreferenced = [f"media-{i}" for i in range(media, media + 3)]
    page_ids: dict[str, int] = {}
    tops = max(1, pages // 5)
    for t in range(tops):
        slug = f"page-{t}"
        page_ids[slug] = wp.create("/wp/v2/pages", {
            "title": f"Page {t}", "slug": slug, "status": "publish",
            "content": f"<p>Top page {t}, see <a href=\"{base}/page-{t}/child-{t}-0/\">its "
                       f"first child</a>.</p>", "menu_order": t})["id"]  # fmt: skip
        done.pages.append(slug)
    for n in range(pages - tops):
        parent = f"page-{n % tops}"
        slug = f"child-{n % tops}-{n // tops}"
        page_ids[slug] = wp.create("/wp/v2/pages", {
            "title": f"Child {n}", "slug": slug, "status": "publish",
            "parent": page_ids[parent], "content": f"<p>Child {n} of {parent}.</p>"})["id"]  # fmt: skip
        done.pages.append(slug)
    cat_list = list(cats.values())
    extras = [slug for slug, _ in extra_media]
    for i in range(posts):
        slug = f"post-{i}"
        featured = done.media[f"media-{i % media}"] if media else None
        inline = done.media[f"media-{(i * 7) % media}"] if media else None
        content = (
            f'<p>Post number {i}. Read <a href="{base}/post-{(i + 1) % posts}/">the next</a>.</p>'
        )
        if inline is not None and i % 3 == 0:
            content += (f'\n<!-- wp:image {{"id":{inline["id"]},"sizeSlug":"medium"}} -->\n'
                        f'<figure class="wp-block-image"><img src="{inline["source_url"]}" '
                        f'class="wp-image-{inline["id"]}"/></figure>\n<!-- /wp:image -->')  # fmt: skip
        if i < len(extras):
            extra = done.media[extras[i]]
            content += f'<p><img class="wp-image-{extra["id"]}" src="{extra["source_url"]}"></p>'
        wp.create("/wp/v2/posts", {
            "title": f"Post {i}", "slug": slug, "status": "publish" if i % 10 else "draft",
            "date": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{8 + i % 10:02d}:15:00",
            "content": content, "excerpt": f"Excerpt {i}", "author": authors[i % 2],
            "categories": [cat_list[i % len(cat_list)]], "tags": [tags[i % 10], tags[(i + 3) % 10]],
            "featured_media": featured["id"] if featured is not None else 0,
            "sticky": i == 1})  # fmt: skip
        done.posts.append(slug)
    return done


def _by_slug(wp: WpClient, route: str, **params: Any) -> dict[str, dict[str, Any]]:
    return {item["slug"]: item for item in wp.collect(route, context="edit", **params)}


_DIGESTS: dict[str, str] = {}


def _bytes(wp: WpClient, url: str) -> str:
    """The SHA-256 of a site's file (each URL fetched once)."""
    if url not in _DIGESTS:
        _DIGESTS[url] = hashlib.sha256(wp.download(url, 1 << 30)).hexdigest()
    return _DIGESTS[url]


def compare(source: WpClient, sandbox: WpClient,
            skipped_media: Collection[str] = frozenset()) -> dict[str, int]:  # fmt: skip
    """Assert the sandbox holds the live site's content: counts, slugs,
    dates, authors' names, term relations, featured images (bytes equal),
    parent pages, settings.  Returns the counts compared."""
    s_settings, d_settings = source.get("/wp/v2/settings"), sandbox.get("/wp/v2/settings")
    for key in ("title", "description", "timezone", "date_format", "start_of_week"):
        assert d_settings[key] == s_settings[key], key
    s_cats, d_cats = _by_slug(source, "/wp/v2/categories"), _by_slug(sandbox, "/wp/v2/categories")
    assert set(s_cats) <= set(d_cats)
    for slug, cat in s_cats.items():
        parent = next((c["slug"] for c in s_cats.values() if c["id"] == cat["parent"]), None)
        d_parent = next(
            (c["slug"] for c in d_cats.values() if c["id"] == d_cats[slug]["parent"]), None
        )
        assert parent == d_parent, slug
    s_tags, d_tags = _by_slug(source, "/wp/v2/tags"), _by_slug(sandbox, "/wp/v2/tags")
    assert set(s_tags) == set(d_tags)
    s_users = {u["id"]: u["name"] for u in source.collect("/wp/v2/users", context="edit")}
    d_users = {u["id"]: u["name"] for u in sandbox.collect("/wp/v2/users", context="edit")}
    s_media = {m["id"]: m for m in source.collect("/wp/v2/media", context="edit")}
    d_media = {m["id"]: m for m in sandbox.collect("/wp/v2/media", context="edit")}
    counts = {}
    for route in ("/wp/v2/pages", "/wp/v2/posts"):
        s_items = _by_slug(source, route, status=ALL_STATUSES)
        d_items = _by_slug(sandbox, route, status=ALL_STATUSES)
        assert set(d_items) == set(s_items), route
        counts[route] = len(d_items)
        s_ids = {i["id"]: slug for slug, i in s_items.items()}
        d_ids = {i["id"]: slug for slug, i in d_items.items()}
        for slug, s in s_items.items():
            d = d_items[slug]
            assert d["date"] == s["date"] and d["status"] == s["status"], slug
            assert d["title"]["raw"] == s["title"]["raw"], slug
            assert d_users[d["author"]] == s_users[s["author"]], slug
            if route.endswith("pages"):
                assert d_ids.get(d["parent"]) == s_ids.get(s["parent"]), slug
            else:
                assert ({c["slug"] for c in d_cats.values() if c["id"] in d["categories"]}
                        == {c["slug"] for c in s_cats.values() if c["id"] in s["categories"]}), slug  # fmt: skip
                assert ({t["slug"] for t in d_tags.values() if t["id"] in d["tags"]}
                        == {t["slug"] for t in s_tags.values() if t["id"] in s["tags"]}), slug  # fmt: skip
            assert source.site.base not in d["content"]["raw"], slug
            if s["featured_media"]:
                s_file = s_media[s["featured_media"]]
                if s_file["slug"] in skipped_media:
                    assert not d["featured_media"], slug
                    continue
                d_file = d_media[d["featured_media"]]
                assert d_file["slug"] == s_file["slug"], slug
                assert _bytes(sandbox, d_file["source_url"]) == _bytes(source, s_file["source_url"]), (
                    slug, d_file["id"], d_file["source_url"], d_file.get("media_details", {}).get("filesize"),
                    s_file["id"], s_file["source_url"], s_file.get("media_details", {}).get("filesize"))  # fmt: skip
    counts["media"] = len(d_media)
    return counts
