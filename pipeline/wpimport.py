"""The ``import`` phase of a client sandbox: the client's live WordPress
site, read through its REST API, written into the sandbox's.

What is copied: the site's title, tagline, timezone, date formats and
permalink structure; its authors (display names; fresh logins and
passwords, no e-mail addresses); categories and tags; the media the content
references (only those are downloaded); pages (parents first) and posts,
keeping slugs, dates, authors, term relations, featured images and parent
pages, with every URL of the live site rewritten to the sandbox's.  Then
the template's ``rewrite`` hook sweeps the database (serialized PHP values
included).

The live site is only read (``WpClient`` refuses any other method) with
its verified TLS.  Each item written is recorded (``SandboxItem``) before
the next is read, and an item not recorded is first looked for in the
sandbox by its slug: an import resumed after a crash never writes an item
twice.  A media file that is missing (404) or over the size limit is
skipped with a warning naming it; anything else that fails fails the run,
so a sandbox is never ready with half its content.
"""

from __future__ import annotations

import logging
import mimetypes
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import select

from pipeline.context import Context, off_loop
from pipeline.refresh import run_hook
from provisioner.db import session_scope
from provisioner.errors import PermanentError
from provisioner.logsafe import register_secret
from provisioner.models import Sandbox, SandboxItem
from provisioner.secrets.vault import sandbox_secret, set_sandbox_secret
from provisioner.ssh.session import SshSession
from provisioner.templates.render import hook_env
from provisioner.wordpress import (
    Progress,
    UrlMap,
    missing_references,
    parents_first,
    permalink_structure,
    referenced_media,
    text_of,
)
from provisioner.wpapi import (
    ALL_STATUSES,
    MediaMissing,
    MediaTooLarge,
    WpClient,
    WpError,
    WpSite,
    WpTrust,
)

log = logging.getLogger(__name__)

APP_PASSWORD_LABEL = "lxc-provisioner import"
TLS_CERT = "/etc/ssl/wordpress/cert.pem"  # the wordpress template's certificate (scripts/20-tls.sh)
# the site settings the import copies (REST names); the rest stay the sandbox's
SETTINGS = ("title", "description", "timezone", "date_format", "time_format", "start_of_week",
            "posts_per_page", "default_category", "show_on_front", "page_on_front",
            "page_for_posts")  # fmt: skip
_PAGE_REFS = ("page_on_front", "page_for_posts")
REPORT_EVERY = 0.5  # seconds between progress events
# media and posts are written this many at a time (each a REST call the
# sandbox's php-fpm serves; pages wait for their parents, so one at a time)
WRITERS = 4
T = TypeVar("T")


async def run(ctx: Context) -> None:
    """Phase ``import``: copy the client's site into the sandbox."""
    with ctx.factory() as session:
        sandbox = session.get(Sandbox, ctx.container_id)
        if sandbox is None:
            raise PermanentError("this container is not a sandbox: it has nothing to import")
        session.expunge(sandbox)
    ct = ctx.container()
    source_password = sandbox_secret(ctx.box, sandbox, "source")
    assert source_password is not None
    register_secret(source_password)
    ssh = await ctx.ssh()
    # A run that died mid-import may have left writes in the sandbox's PHP:
    # PHP finishes a request whose client is gone, and one finishing late
    # would race this run's write of the same item (two uploads of one file
    # name copy over each other).  Restarting php-fpm ends them first: a
    # write is then done (found by its slug below) or never happened.
    ctx.step("restarting the sandbox's php-fpm (no write of an earlier attempt is left)", 0.0)
    await ssh.run('systemctl restart "php$(ls /etc/php | sort -V | tail -n 1)-fpm"', check=True,
                  name="systemctl")  # fmt: skip
    admin = str(ctx.variables.get("admin_user") or "admin")
    target_password = sandbox_secret(ctx.box, sandbox, "target")
    if target_password is None:
        ctx.step("creating the sandbox's Application Password for the import", 0.0)
        target_password = await _output(
            ssh, f"wp-app-password {shlex.quote(admin)} {shlex.quote(APP_PASSWORD_LABEL)}",
            name="wp-app-password")  # fmt: skip
        if not target_password:
            raise PermanentError("wp-app-password printed no Application Password")
        register_secret(target_password)
        with session_scope(ctx.factory) as session:
            row = session.get(Sandbox, ctx.container_id)
            assert row is not None
            set_sandbox_secret(ctx.box, row, "target", target_password)
    register_secret(target_password)
    pin = await _output(ssh, f"openssl x509 -in {TLS_CERT} -noout -fingerprint -sha256",
                        name="openssl")  # fmt: skip
    fingerprint = pin.split("=", 1)[-1]
    site_host = str(ctx.variables.get("site_host") or "") or (ct.ip or "")
    target_base = f"https://{site_host}"
    source = WpSite(sandbox.source_url, sandbox.source_user, source_password,
                    WpTrust(ca_file=sandbox.source_ca_file,
                            fingerprint=sandbox.source_fingerprint))  # fmt: skip
    # the sandbox is reached at its address; its site URL may name another host
    target = WpSite(f"https://{ct.ip}", admin, target_password,
                    WpTrust(fingerprint=fingerprint.replace(":", "").lower()),
                    read_only=False)  # fmt: skip
    copy = SiteCopy(ctx, source, target, target_base, ctx.settings.sandbox_media_max_bytes)
    summary = await off_loop(copy.run)
    if copy.permalinks is not None:
        ctx.step(f"permalink structure {copy.permalinks or 'plain'!r}", 0.97)
        php = ("require '/usr/local/lib/wp-provisioner/bootstrap.php'; "
               "update_option('permalink_structure', getenv('WP_PERMALINKS')); "
               "flush_rewrite_rules(false);")  # fmt: skip
        await ssh.run(f"cd / && runuser -u www-data -- php -r {shlex.quote(php)}", check=True,
                      env={"WP_PERMALINKS": copy.permalinks}, name="php")  # fmt: skip
    # what is left of the live site's URLs (in the whole database, serialized values too)
    env = hook_env(ctx.template, ctx.variables, hostname=ct.hostname, ip=ct.ip or "",
                   peer_hostname=urlsplit(sandbox.source_url).hostname or "",
                   environment=ct.environment or "")  # fmt: skip
    await run_hook(ctx, ssh, "rewrite", env, 0.99)
    with session_scope(ctx.factory) as session:
        row = session.get(Sandbox, ctx.container_id)
        assert row is not None
        row.summary = summary
    ctx.step(f"imported {_counts(summary)}", 1.0)


async def _output(ssh: SshSession, command: str, *, name: str) -> str:
    """A command's stdout (never logged: it may be a password)."""
    lines: list[str] = []
    await ssh.run(command, check=True, name=name,
                  on_line=lambda stream, line: lines.append(line) if stream == "stdout" else None)  # fmt: skip
    return "\n".join(lines).strip()


def _counts(summary: Mapping[str, Any]) -> str:
    parts = [f"{summary.get(k, 0)} {k}" for k in ("posts", "pages", "media", "categories",
                                                  "tags", "users")]  # fmt: skip
    skipped = summary.get("skipped") or []
    return ", ".join(parts) + (f"; {len(skipped)} skipped" if skipped else "")


@dataclass
class SiteCopy:
    """The blocking copy (run in a worker thread): read, then write in order."""

    ctx: Context
    source_site: WpSite
    target_site: WpSite
    target_base: str
    media_max_bytes: int
    permalinks: str | None = None
    skipped: list[str] = field(default_factory=list)
    _last_report: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = 0.0

    def run(self) -> dict[str, Any]:
        with WpClient(self.source_site) as source, WpClient(self.target_site) as target:
            return self._copy(source, target)

    # -- reading ---------------------------------------------------------------------

    def _copy(self, source: WpClient, target: WpClient) -> dict[str, Any]:
        ctx = self.ctx
        began = time.monotonic()
        ctx.step(f"reading {self.source_site.base}", 0.0)
        index = source.index()
        me = source.me()
        ctx.log(f"reading {index.get('name')!r} at {self.source_site.base} as "
                f"{me.get('name') or self.source_site.user} (read only)")  # fmt: skip
        settings = self._settings(source, index)
        users = self._listing(source, "/wp/v2/users", context="edit")
        categories = self._listing(source, "/wp/v2/categories", context="edit")
        tags = self._listing(source, "/wp/v2/tags", context="edit")
        pages = self._listing(source, "/wp/v2/pages", context="edit", status=ALL_STATUSES)
        posts = self._listing(source, "/wp/v2/posts", context="edit", status=ALL_STATUSES)
        media = {int(m["id"]): m for m in self._listing(source, "/wp/v2/media", context="edit")}
        entries = [*pages, *posts]
        wanted = [mid for mid in referenced_media(entries, media) if mid in media]
        for mid, users_of in missing_references(entries, media).items():
            self._skip(f"media #{mid} (used by {', '.join(users_of[:5])}): not on the live site")
        authors = {int(e.get("author") or 0) for e in entries} - {0}
        users = [u for u in users if int(u["id"]) in authors]
        total_bytes = sum(int((media[m].get("media_details") or {}).get("filesize") or 0)
                          for m in wanted)  # fmt: skip
        progress = Progress(items_total=1 + len(users) + len(categories) + len(tags)
                            + len(wanted) + len(pages) + len(posts), bytes_total=total_bytes)  # fmt: skip
        ctx.log(f"to copy: {len(posts)} posts, {len(pages)} pages, {len(wanted)} of "
                f"{len(media)} media ({total_bytes / 1048576:.1f} MiB), {len(categories)} "
                f"categories, {len(tags)} tags, {len(users)} authors")  # fmt: skip
        published = next((p for p in posts if p.get("status") == "publish" and p.get("link")), None)
        if published is not None:
            slugs = [c.get("slug") for c in categories
                     if int(c["id"]) in (published.get("categories") or [])]  # fmt: skip
            self.permalinks = permalink_structure(str(published["link"]),
                                                  str(index.get("home") or self.source_site.base),
                                                  {**published, "category_slugs": slugs})  # fmt: skip
        self._started = time.monotonic()
        # -- writing ------------------------------------------------------------------
        urls = UrlMap(self.source_site.base, self.target_base)
        ids: dict[str, dict[int, int]] = {k: self._mapped(k) for k in
                                          ("user", "category", "tag", "media", "page", "post")}  # fmt: skip
        self._write_settings(target, settings, progress)
        self._drop_samples(target, ids, {str(e.get("slug")) for e in entries})
        for user in users:
            self._item(target, "user", user, ids, progress, self._user_body(user),
                       "/wp/v2/users")  # fmt: skip
        for cat in parents_first(categories):
            body = {"name": text_of(cat.get("name")), "slug": cat["slug"],
                    "description": text_of(cat.get("description")),
                    "parent": ids["category"].get(int(cat.get("parent") or 0), 0)}  # fmt: skip
            self._item(target, "category", cat, ids, progress, body, "/wp/v2/categories")
        for tag in tags:
            body = {"name": text_of(tag.get("name")), "slug": tag["slug"],
                    "description": text_of(tag.get("description"))}  # fmt: skip
            self._item(target, "tag", tag, ids, progress, body, "/wp/v2/tags")
        media_began = time.monotonic()
        self._parallel(wanted, lambda mid: self._media(source, target, media[mid], ids, urls,
                                                       progress))  # fmt: skip
        media_took = time.monotonic() - media_began
        for page in parents_first(pages):
            self._item(target, "page", page, ids, progress,
                       self._entry_body(page, ids, urls, "page"), "/wp/v2/pages")  # fmt: skip
        self._parallel(posts, lambda post: self._item(
            target, "post", post, ids, progress, self._entry_body(post, ids, urls, "post"),
            "/wp/v2/posts"))  # fmt: skip
        refs = {k: ids["page"].get(int(settings.get(k) or 0), 0) for k in _PAGE_REFS}
        if any(refs.values()):
            target.request("POST", "/wp/v2/settings", body=refs)
        self._report(progress, force=True)
        done = time.monotonic()
        seconds = {"read": round(self._started - began, 2), "media": round(media_took, 2),
                   "write": round(done - self._started - media_took, 2)}  # fmt: skip
        ctx.log(f"read the site in {seconds['read']:.1f}s; media {seconds['media']:.1f}s "
                f"({progress.bytes_done / 1048576:.1f} MiB); the rest written in "
                f"{seconds['write']:.1f}s")  # fmt: skip
        return {"posts": len(posts), "pages": len(pages), "media": len(wanted),
                "categories": len(categories), "tags": len(tags), "users": len(users),
                "bytes": progress.bytes_done, "skipped": self.skipped,
                "permalink_structure": self.permalinks, "seconds": seconds}  # fmt: skip

    def _listing(self, source: WpClient, route: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for batch, total in source.pages(route, **params):
            items.extend(batch)
            self.ctx.step(f"reading {route.rsplit('/', 1)[-1]}: {len(items)}/{total}", 0.0)
        return items

    def _settings(self, source: WpClient, index: Mapping[str, Any]) -> dict[str, Any]:
        """The site's settings (``/wp/v2/settings`` needs manage_options; a
        user without it gets what the index says: title, tagline, timezone)."""
        try:
            found = source.get("/wp/v2/settings")
        except WpError as exc:
            self.ctx.warn(f"the site's settings are not readable by {self.source_site.user} "
                          f"({exc.message}); copying the title, tagline and timezone only")  # fmt: skip
            found = {"title": index.get("name"), "description": index.get("description"),
                     "timezone": index.get("timezone_string") or None}  # fmt: skip
        return {k: found[k] for k in SETTINGS if found.get(k) not in (None, "")}

    # -- writing ---------------------------------------------------------------------

    def _mapped(self, kind: str) -> dict[int, int]:
        with self.ctx.factory() as session:
            rows = session.execute(select(SandboxItem.source_id, SandboxItem.target_id).where(
                SandboxItem.container_id == self.ctx.container_id,
                SandboxItem.kind == kind)).all()  # fmt: skip
        return {s: t for s, t in rows}

    def _record(self, kind: str, source_id: int, target_id: int) -> None:
        """Note the sandbox's id of an item (again: a media item uploaded anew)."""
        with session_scope(self.ctx.factory) as session:
            row = session.scalars(select(SandboxItem).where(
                SandboxItem.container_id == self.ctx.container_id, SandboxItem.kind == kind,
                SandboxItem.source_id == source_id)).one_or_none()  # fmt: skip
            if row is None:
                session.add(SandboxItem(container_id=self.ctx.container_id, kind=kind,
                                        source_id=source_id, target_id=target_id))  # fmt: skip
            else:
                row.target_id = target_id

    def _write_settings(self, target: WpClient, settings: Mapping[str, Any],
                        progress: Progress) -> None:  # fmt: skip
        body = {
            k: v for k, v in settings.items() if k not in _PAGE_REFS and k != "default_category"
        }
        if body:
            target.request("POST", "/wp/v2/settings", body=body)
        with self._lock:
            progress.items_done += 1

    def _drop_samples(self, target: WpClient, ids: dict[str, dict[int, int]],
                      slugs: set[str]) -> None:  # fmt: skip
        """Delete the sandbox's posts and pages that the live site does not
        have and no import wrote (the fresh installation's sample post,
        sample page and privacy policy draft): the sandbox holds the
        site's content, no more."""
        for route, kind in (("/wp/v2/posts", "post"), ("/wp/v2/pages", "page")):
            ours = set(ids[kind].values())
            for entry in target.collect(route, context="edit", status=ALL_STATUSES):
                if int(entry["id"]) not in ours and str(entry.get("slug")) not in slugs:
                    target.request("DELETE", f"{route}/{entry['id']}", params={"force": "true"})
                    self.ctx.log(f"removed the fresh installation's {kind} {entry.get('slug')!r}")

    def _item(self, target: WpClient, kind: str, item: Mapping[str, Any],
              ids: dict[str, dict[int, int]], progress: Progress, body: Mapping[str, Any],
              route: str) -> None:  # fmt: skip
        """Write one item unless it is recorded.  One the sandbox has by its
        slug (written by an import that stopped before recording it, or the
        fresh installation's: its first post and page, the Uncategorized
        category, the administrator) is updated instead of written twice."""
        source_id = int(item["id"])
        if source_id not in ids[kind]:
            params = {"status": ALL_STATUSES} if kind in ("page", "post") else {}
            slug = str(body.get("slug") or "")
            found = target.find_slug(route, slug, **params) if slug else None
            if found is None:
                found = target.create(route, body)
            else:
                update = dict(body)
                if kind == "user":  # its login and address stay; only the name is the site's
                    update = {"name": body["name"]}
                found = target.update(route, int(found["id"]), update)
            ids[kind][source_id] = int(found["id"])
            self._record(kind, source_id, int(found["id"]))
        with self._lock:
            progress.items_done += 1
        self._report(progress)

    def _user_body(self, user: Mapping[str, Any]) -> dict[str, Any]:
        slug = str(user.get("slug") or f"author-{user['id']}")
        return {"username": slug, "slug": slug, "name": str(user.get("name") or slug),
                "email": f"{slug}@sandbox.invalid", "roles": ["author"],
                "password": secrets.token_urlsafe(24)}  # fmt: skip

    def _entry_body(self, entry: Mapping[str, Any], ids: dict[str, dict[int, int]],
                    urls: UrlMap, kind: str) -> dict[str, Any]:  # fmt: skip
        body: dict[str, Any] = {
            "title": text_of(entry.get("title")),
            "content": urls.rewrite(text_of(entry.get("content"))),
            "excerpt": urls.rewrite(text_of(entry.get("excerpt"))),
            "slug": entry.get("slug") or "",
            "status": entry.get("status") or "publish",
            "date": entry.get("date"),
            "comment_status": entry.get("comment_status") or "open",
            "ping_status": entry.get("ping_status") or "open",
            "menu_order": int(entry.get("menu_order") or 0),
            "featured_media": ids["media"].get(int(entry.get("featured_media") or 0), 0),
        }  # fmt: skip
        if entry.get("date_gmt"):
            body["date_gmt"] = entry["date_gmt"]
        if entry.get("password"):
            body["password"] = entry["password"]
        author = ids["user"].get(int(entry.get("author") or 0))
        if author:
            body["author"] = author
        if kind == "page":
            body["parent"] = ids["page"].get(int(entry.get("parent") or 0), 0)
            if entry.get("template"):
                body["template"] = entry["template"]
        else:
            body["categories"] = [ids["category"][c] for c in entry.get("categories") or []
                                  if c in ids["category"]]  # fmt: skip
            body["tags"] = [ids["tag"][t] for t in entry.get("tags") or [] if t in ids["tag"]]
            body["sticky"] = bool(entry.get("sticky"))
            if entry.get("format") and entry["format"] != "standard":
                body["format"] = entry["format"]
        return {k: v for k, v in body.items() if v is not None}

    def _media(self, source: WpClient, target: WpClient, item: Mapping[str, Any],
               ids: dict[str, dict[int, int]], urls: UrlMap, progress: Progress) -> None:  # fmt: skip
        source_id = int(item["id"])
        size = int((item.get("media_details") or {}).get("filesize") or 0)
        slug = str(item.get("slug") or "")
        recorded = ids["media"].get(source_id)
        if recorded is not None:
            found = target.get(f"/wp/v2/media/{recorded}", context="edit")
        else:  # written by an import that stopped before recording it, or not at all
            found = target.find_slug("/wp/v2/media", slug) if slug else None
        found = self._complete(target, source_id, slug, size, found)
        if found is not None:
            self._bytes(progress, size)
        else:
            url = str(item.get("source_url") or "")
            try:
                data = source.download(url, self.media_max_bytes,
                                       lambda n: self._bytes(progress, n))  # fmt: skip
            except (MediaMissing, MediaTooLarge) as exc:
                self._skip(f"media #{source_id} {slug!r}: {exc.message}")
                with self._lock:
                    progress.items_done += 1
                    progress.bytes_total = max(0, progress.bytes_total - size)
                return
            found = self._upload(target, item, data)
        if recorded != int(found["id"]):
            ids["media"][source_id] = int(found["id"])
            self._record("media", source_id, int(found["id"]))
        urls.add_media(item, found)
        with self._lock:
            progress.items_done += 1
        self._report(progress)

    def _complete(self, target: WpClient, source_id: int, slug: str, size: int,
                  found: Mapping[str, Any] | None) -> Mapping[str, Any] | None:  # fmt: skip
        """``found``, the sandbox's copy of a media item an earlier attempt
        wrote, if it is whole; otherwise it is deleted and None returned (to
        be uploaded again).  A run killed mid-upload can leave WordPress an
        item of the bytes that arrived: its file size then differs from the
        live site's (WordPress records both in ``media_details.filesize``)."""
        if found is None or not size:
            return found
        has = int((found.get("media_details") or {}).get("filesize") or 0)
        if has == size:
            return found
        self.ctx.warn(f"media #{source_id} {slug!r}: the sandbox holds {has} of its {size} "
                      "bytes (an earlier attempt stopped mid-upload): uploading it again")  # fmt: skip
        target.delete("/wp/v2/media", int(found["id"]))
        return None

    def _upload(self, target: WpClient, item: Mapping[str, Any], data: bytes) -> dict[str, Any]:
        """Upload a file and set its fields in the same call (the slug first
        of all: a resumed import finds the item by it)."""
        name = PurePosixPath(urlsplit(str(item.get("source_url"))).path).name or "file"
        mime = str(item.get("mime_type") or mimetypes.guess_type(name)[0] or "")
        fields = {"slug": item.get("slug"), "title": text_of(item.get("title")),
                  "caption": text_of(item.get("caption")), "alt_text": item.get("alt_text") or "",
                  "description": text_of(item.get("description")), "date": item.get("date")}  # fmt: skip
        return target.upload(name, mime, data, {k: v for k, v in fields.items() if v})

    def _bytes(self, progress: Progress, count: int) -> None:
        with self._lock:
            progress.bytes_done += count
        self._report(progress)

    def _parallel(self, items: Sequence[T], write: Callable[[T], None]) -> None:
        """Write independent items (media, posts) WRITERS at a time; the
        first failure fails the phase once the writes in flight end (each
        item written is recorded: a retry resumes after them)."""
        pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="wpimport")
        try:
            for future in [pool.submit(write, item) for item in items]:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _skip(self, what: str) -> None:
        self.skipped.append(what)
        self.ctx.warn(f"skipped {what}")

    def _report(self, progress: Progress, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_report < REPORT_EVERY:
                return
            self._last_report = now
        self.ctx.step(progress.describe(now - self._started), progress.fraction() * 0.95)
