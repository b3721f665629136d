"""``/api/webhooks``: signed notifications of containers' events, and their
delivery log.

An administrator sees and manages every hook, the global ones (``owner``
null: every container's events) included; any other user sees and manages
the hooks they own, and a hook they add is theirs.  A hook's signing secret
is returned once, by the call that adds it, when it was generated; no other
response carries it.  Sending happens in the workers: ``test`` queues a
``ping`` and answers 202.
"""

from __future__ import annotations

from flask import Response, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy import select

from provisioner.errors import ConfigError
from provisioner.models import CONTAINER_ID, Container, Webhook
from provisioner.views import delivery_json, webhook_json
from provisioner.webhook_store import (
    EVERYTHING,
    Scope,
    WebhookNotFound,
    add_webhook,
    get_webhook,
    list_deliveries,
    list_webhooks,
    remove_webhook,
    send_test,
)
from provisioner.webhooks import (
    EVENTS,
    MAX_SECRET_LENGTH,
    MAX_URL_LENGTH,
    check_events,
    check_owner,
    check_secret,
    check_url,
)
from web.api import ApiError, Body, bp, config_error, json_body, query_int
from web.auth import current_user
from web.resources import get_db, get_redis, resources


def _scope() -> Scope:
    user = current_user()
    return EVERYTHING if user.is_admin else Scope(user.username)


def _find(hook_id: int) -> Webhook:
    try:
        return get_webhook(get_db(), hook_id, _scope())
    except WebhookNotFound:
        raise ApiError(404, f"no webhook {hook_id}") from None


def _owner(body: Body) -> str | None:
    """Whose containers the hook is for: absent, the caller; null, every
    container (administrators only); a name, that user (administrators only)."""
    user = current_user()
    if "owner" not in body.data:
        return user.username
    owner = body.string("owner", max_length=64)
    if not user.is_admin and owner != user.username:
        raise ApiError(403, "owner: only administrators may add webhooks for other users or for "
                       "every container", "owner")  # fmt: skip
    return owner


@bp.route("/webhooks")
def list_hooks() -> Response:
    """The caller's webhooks (an administrator's: all of them), by id."""
    return jsonify({"webhooks": [webhook_json(h) for h in list_webhooks(get_db(), _scope())]})


@bp.route("/webhooks", methods=["POST"])
def add_hook() -> tuple[Response, int]:
    """Add a webhook: 201 with it and, when generated, its secret (once)."""
    body = Body(json_body())
    url = body.string("url", required=True, max_length=MAX_URL_LENGTH)
    events = body.strings("events", max_items=len(EVENTS))
    secret = body.string("secret", max_length=MAX_SECRET_LENGTH)
    owner = _owner(body)
    # every field's rule, each problem naming its field (add_webhook checks them again)
    checks = [("url", lambda: check_url(url)), ("events", lambda: check_events(events)),
              ("owner", lambda: check_owner(owner))]  # fmt: skip
    if secret is not None:
        checks.append(("secret", lambda: check_secret(secret)))
    for field, check in checks:
        if body.failed(field):
            continue
        try:
            check()
        except ConfigError as exc:
            body.refuse(field, exc.message)
    body.finish()
    assert url is not None
    try:
        hook, generated = add_webhook(get_db(), resources().box, url, owner=owner, events=events,
                                      secret=secret)  # fmt: skip
    except ConfigError as exc:
        get_db().rollback()
        raise config_error(exc) from None
    get_db().commit()
    answer: dict[str, object] = {"webhook": webhook_json(hook)}
    if generated is not None:
        answer["secret"] = generated
    return jsonify(answer), 201


@bp.route("/webhooks/<int:webhook_id>", methods=["DELETE"])
def delete_hook(webhook_id: int) -> tuple[str, int]:
    """Remove a webhook and its delivery log."""
    try:
        remove_webhook(get_db(), webhook_id, _scope())
    except WebhookNotFound:
        raise ApiError(404, f"no webhook {webhook_id}") from None
    get_db().commit()
    return "", 204


@bp.route("/webhooks/<int:webhook_id>/deliveries")
def hook_deliveries(webhook_id: int) -> Response:
    """The webhook's deliveries, newest first (``container``: only that
    container's; ``limit``)."""
    hook = _find(webhook_id)
    container_id = request.args.get("container") or None
    if container_id is not None and not CONTAINER_ID.fullmatch(container_id):
        raise ApiError(400, f"container: not a container id: {container_id!r}", "container")
    if container_id is not None and len(container_id) < 36:  # a prefix, as the CLI takes it
        ids = list(get_db().scalars(select(Container.id).where(
            Container.id.startswith(container_id)).limit(2)))  # fmt: skip
        container_id = ids[0] if len(ids) == 1 else container_id
    limit = query_int("limit", default=50, minimum=1, maximum=1000)
    found = list_deliveries(get_db(), _scope(), webhook_id=hook.id, container_id=container_id,
                            limit=limit)  # fmt: skip
    return jsonify({"deliveries": [delivery_json(d) for d in found]})


@bp.route("/webhooks/<int:webhook_id>/test", methods=["POST"])
def test_hook(webhook_id: int) -> tuple[Response, int]:
    """Queue a ``ping`` delivery: 202 with it (a worker sends it; its
    attempts appear in the delivery log)."""
    hook = _find(webhook_id)
    try:
        delivery = send_test(get_db(), get_redis(), resources().settings, hook)
    except RedisError:
        raise ApiError(503, "the queue (Redis) is unavailable: the ping is stored and is sent "
                       "once a worker finds it") from None  # fmt: skip
    return jsonify({"delivery": delivery_json(delivery)}), 202
