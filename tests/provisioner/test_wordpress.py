"""The sandbox import's rules (pure)."""

from __future__ import annotations

from typing import Any

from provisioner.wordpress import (
    Progress,
    UrlMap,
    media_urls,
    missing_references,
    parents_first,
    permalink_structure,
    referenced_media,
    text_of,
)

SRC = "https://site.example"
UP = f"{SRC}/wp-content/uploads/2026/11"


def attachment(mid: int, name: str, sizes: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {"id": mid, "source_url": f"{UP}/{name}.jpg", "media_details": {}}
    if sizes:
        item["media_details"]["sizes"] = {
            "thumbnail": {"source_url": f"{UP}/{name}-150x150.jpg"},
            "medium": {"source_url": f"{UP}/{name}-300x200.jpg"},
        }
    return item


MEDIA = {
    m["id"]: m
    for m in (
        attachment(1, "a"),
        attachment(2, "b"),
        attachment(3, "c"),
        attachment(4, "d"),
        attachment(5, "e"),
        attachment(6, "f"),
    )
}


def test_text_of() -> None:
    assert text_of({"raw": "r", "rendered": "x"}) == "r"
    assert text_of({"rendered": "x"}) == "x"
    assert text_of("s") == "s" and text_of(None) == ""


def test_media_urls() -> None:
    assert media_urls(MEDIA[1]) == [f"{UP}/a.jpg", f"{UP}/a-150x150.jpg", f"{UP}/a-300x200.jpg"]
    assert media_urls({"id": 9}) == []


def test_only_referenced_media() -> None:
    posts = [
        {"id": 10, "featured_media": 1, "content": {"raw": "no media"}},
        {"id": 11, "featured_media": 0,
         "content": {"raw": f'<img class="wp-image-2" src="{UP}/b-300x200.jpg">'}},
        {"id": 12, "content": {"raw": '<!-- wp:image {"id":3,"sizeSlug":"large"} -->'}},
        {"id": 13, "content": {"raw": '[gallery ids="4, 5"]'}},
        {"id": 14, "content": {"raw": "x"}, "excerpt": {"raw": f'<a href="{UP}/f-150x150.jpg">'}},
    ]  # fmt: skip
    assert referenced_media(posts, MEDIA) == [1, 2, 3, 4, 5, 6]
    assert referenced_media(posts[:1], MEDIA) == [1]
    assert referenced_media([{"id": 1, "content": {"raw": ""}}], MEDIA) == []


def test_missing_references_name_the_post() -> None:
    posts = [{"id": 10, "slug": "hello", "featured_media": 99, "content": {"raw": ""}},
             {"id": 11, "slug": "other", "content": {"raw": "wp-image-1"}}]  # fmt: skip
    assert missing_references(posts, MEDIA) == {99: ["hello"]}


def test_parents_first() -> None:
    pages = [{"id": 3, "parent": 2}, {"id": 2, "parent": 1}, {"id": 1, "parent": 0},
             {"id": 4, "parent": 77}, {"id": 5, "parent": 1}]  # fmt: skip
    order = [p["id"] for p in parents_first(pages)]
    assert order == [1, 4, 5, 2, 3]  # one pass places what it can, the next the rest
    looped = [{"id": 1, "parent": 2}, {"id": 2, "parent": 1}]
    assert sorted(p["id"] for p in parents_first(looped)) == [1, 2]


def test_url_map_sizes_then_base() -> None:
    dst = "https://10.0.0.5"
    new = {"source_url": f"{dst}/wp-content/uploads/2026/12/a.jpg",
           "media_details": {"sizes": {"thumbnail": {
               "source_url": f"{dst}/wp-content/uploads/2026/12/a-150x150.jpg"}}}}  # fmt: skip
    urls = UrlMap(SRC, dst)
    urls.add_media(MEDIA[1], new)
    text = (f'<img src="{UP}/a-150x150.jpg"><img src="{UP}/a-300x200.jpg"><img src="{UP}/a.jpg">'
            f'<a href="{SRC}/about/">x</a> <a href="http://site.example/x">'
            '<!-- wp:image {"url":"https:\\/\\/site.example\\/wp-content\\/uploads\\/2026\\/11\\/a.jpg"} -->')  # fmt: skip
    out = urls.rewrite(text)
    assert f'src="{dst}/wp-content/uploads/2026/12/a-150x150.jpg"' in out
    # no medium size in the copy: its original
    assert out.count(f"{dst}/wp-content/uploads/2026/12/a.jpg") == 2
    assert f'href="{dst}/about/"' in out and f'href="{dst}/x"' in out
    assert "https:\\/\\/10.0.0.5\\/wp-content\\/uploads\\/2026\\/12\\/a.jpg" in out
    assert "site.example" not in out


def test_permalink_structure() -> None:
    post = {"id": 12, "slug": "hello-world", "date": "2026-11-05T10:20:30"}
    assert permalink_structure(f"{SRC}/?p=12", SRC, post) == ""
    assert permalink_structure(f"{SRC}/hello-world/", SRC, post) == "/%postname%/"
    assert (permalink_structure(f"{SRC}/2026/11/05/hello-world/", SRC, post)
            == "/%year%/%monthnum%/%day%/%postname%/")  # fmt: skip
    assert permalink_structure(f"{SRC}/archives/12", SRC, post) == "/archives/%post_id%"
    assert (permalink_structure(f"{SRC}/news/hello-world/", SRC, {**post, "category_slugs": ["news"]})
            == "/%category%/%postname%/")  # fmt: skip


def test_progress_and_eta() -> None:
    p = Progress(items_total=100, bytes_total=1000)
    assert p.eta(10) is None and p.fraction() == 0
    p.items_done, p.bytes_done = 50, 500
    assert p.fraction() == 0.5 and p.eta(10) == 10
    assert p.describe(10).startswith("50/100 items, 0.0/0.0 MiB, about 10s left")
    assert Progress(0, 0).fraction() == 1.0
    done = Progress(10, 0, 10, 0)
    assert "left" not in done.describe(5)
