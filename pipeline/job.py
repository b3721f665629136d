"""The RQ job: one run of one action for one container.

``run(container_id, action)`` is what the queue calls.  It takes the
container's lease (only one worker runs a container at a time), builds the
typed context, runs the phases that are not finished yet, retries transient
errors with backoff, and records the outcome.  A failed run says which
phase, which script, what exit code, the last lines and what to do; the job
then fails in RQ too (never a swallowed exception reported as success).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import get_current_job
from rq.timeouts import JobTimeoutException
from sqlalchemy.orm import Session, sessionmaker

from pipeline import changes, create, deploy, finalize, migrate, refresh, scripts, start, wpimport
from pipeline.context import Context, off_loop
from provisioner import drain, lease
from provisioner.backoff import Backoff
from provisioner.changes import SafeChange, check_on_failure
from provisioner.config import Settings
from provisioner.db import make_engine, session_factory, session_scope
from provisioner.errors import (
    CommandFailedError,
    NodeUnreachableError,
    PermanentError,
    ProvisionError,
    TransientError,
)
from provisioner.events import EventPublisher, latest_seq, stored_events
from provisioner.logsafe import setup_logging
from provisioner.models import Container, FailurePolicy, Lifecycle, Node, Operation, utcnow
from provisioner.nodes import client_for
from provisioner.ownership import NotOurs
from provisioner.phases import plan_named
from provisioner.placing import release
from provisioner.redis_url import redis_client
from provisioner.requests import load_named_template, stored_variables
from provisioner.secrets.keyfile import load_secret_box
from provisioner.templates.variables import secret_values
from provisioner.webhook_store import notify_or_warn

log = logging.getLogger(__name__)

T = TypeVar("T")
Phase = Callable[[Context], Awaitable[None]]
# each phase's entry point; they run in the order of the container's plan
# (provisioner.phases.PLANS)
PHASE_RUNS: dict[str, Phase] = {
    "create": create.run, "start": start.run, "deploy": deploy.run,
    "scripts": scripts.run, "import": wpimport.run, "finalize": finalize.run,
}  # fmt: skip


class LeaseLost(Exception):
    """Another worker took the container over; stop without writing."""


def progress_saver(redis: Redis, events: EventPublisher) -> Callable[[str, int], None]:
    """What ``rq info`` shows of the run: its phase and percent in the job's
    meta, written through the run's own Redis client (RQ's waits minutes on
    a stalled Redis) and skipped while Redis is known to be away: the run
    never waits for it."""
    job = get_current_job()

    def save(phase: str, percent: int) -> None:
        if job is None or events.redis_down:
            return
        job.meta.update(phase=phase, percent=percent)
        try:
            redis.hset(job.key, "meta", job.serializer.dumps(job.meta))
        except RedisError as exc:
            log.debug("the job's progress not saved: %s", exc)

    return save


async def _retrying(ctx: Context, name: str, step: Callable[[], Awaitable[T]],
                    keeper: lease.LeaseKeeper) -> T:  # fmt: skip
    """Run ``step``, retrying transient errors with backoff (up to the
    settings' attempts), as long as the lease is ours.  A node that cannot
    be reached at all is waited for instead (``node_wait``), said once
    when the wait begins and once when it answers again."""
    backoff = Backoff(base=ctx.settings.retry_base_delay, factor=2.0,
                      cap=ctx.settings.retry_max_delay, jitter=0.5)  # fmt: skip
    attempt = 1
    waiting_since: float | None = None  # the node cannot be reached: wait for it
    waits = 0
    while True:
        if keeper.lost.is_set():
            raise LeaseLost(ctx.container_id)
        try:
            result = await step()
            if waiting_since is not None:
                ctx.step(f"node {ctx.pve.connection.node} answers again after "
                         f"{time.monotonic() - waiting_since:.0f}s; going on")  # fmt: skip
            return result
        except NodeUnreachableError as exc:
            await ctx.close()
            now = time.monotonic()
            if waiting_since is None:
                waiting_since = now
                ctx.warn(f"{exc}: waiting up to {ctx.settings.node_wait:.0f}s for node "
                         f"{ctx.pve.connection.node} to answer, then going on where the run "
                         "stopped")  # fmt: skip
            elif now - waiting_since >= ctx.settings.node_wait:
                raise PermanentError(f"{name}: node {ctx.pve.connection.node} did not answer "
                                     f"for {now - waiting_since:.0f}s; last error: {exc}",
                                     hint="bring the node back (or drain it), then retry") from exc  # fmt: skip
            waits = min(waits + 1, 30)
            await asyncio.sleep(min(backoff.delay(waits, random.random()),
                                    ctx.settings.retry_max_delay))  # fmt: skip
        except TransientError as exc:
            await ctx.close()  # a broken SSH session is reopened next time
            if attempt >= ctx.settings.retry_max_attempts:
                raise PermanentError(f"{name} failed {attempt} times; last error: {exc}",
                                     hint="the node or the container keeps failing; check "
                                          "them, then retry") from exc  # fmt: skip
            delay = backoff.delay(attempt, random.random())
            ctx.warn(f"{exc} - retrying in {delay:.1f}s "
                     f"(attempt {attempt + 1} of {ctx.settings.retry_max_attempts})")  # fmt: skip
            await asyncio.sleep(delay)
            attempt += 1


def _error_details(ctx: Context, exc: BaseException) -> dict[str, Any]:
    # the message without the hint: the hint has its own field
    text = exc.message if isinstance(exc, ProvisionError) else str(exc)
    details: dict[str, Any] = {"phase": ctx.phase, "message": text}
    if isinstance(exc, ProvisionError) and exc.hint:
        details["hint"] = exc.hint
    if isinstance(exc, CommandFailedError):
        details.update(exit_code=exc.exit_status, last_lines=exc.output_tail,
                       timed_out=exc.timed_out)  # fmt: skip
        details["script"] = text.split()[1] if text.startswith("script ") else None
    tail = getattr(exc, "log_tail", None)
    if tail:
        details["last_lines"] = tail
    return details


async def _provision(ctx: Context, keeper: lease.LeaseKeeper) -> None:
    for name in ctx.plan.names:
        if name in ctx.container().finished_phases:
            continue
        ctx.phase = name
        ctx.update(current_phase=name)
        await _retrying(ctx, name, functools.partial(PHASE_RUNS[name], ctx), keeper)
        ctx.update(finished_phases=[*ctx.container().finished_phases, name])


async def _destroy(ctx: Context) -> None:
    if ctx.container().vmid is not None:
        try:
            owned = await off_loop(ctx.owned)
        except NotOurs as lost:
            ctx.disown()
            ctx.warn(f"{lost.message}: removing the record only")
        else:
            config = await off_loop(ctx.pve.get_config, owned.vmid)
            if str(config.get("protection", "0")) in ("1", "true"):
                raise PermanentError(f"CT {owned.vmid} is protected (Proxmox VE's protection "
                                     "flag): it cannot be destroyed",
                                     hint="provisioner set ID --unprotect first, if you mean "
                                          "it")  # fmt: skip
            ctx.step(f"destroying CT {owned.vmid}", 0.3)
            upid = await off_loop(ctx.pve.destroy, owned, force=True, purge=True)
            await off_loop(ctx.pve.wait_for_task, upid, timeout=ctx.settings.task_timeout,
                           poll=0.25, on_log=lambda line: ctx.log(line))  # fmt: skip
    ctx.step("destroyed", 1.0)


async def _power(ctx: Context, action: str) -> None:
    owned = await off_loop(ctx.owned)
    call = {"start": ctx.pve.start, "stop": ctx.pve.stop, "reboot": ctx.pve.reboot}[action]
    ctx.step(f"{action} CT {owned.vmid}", 0.5)
    upid = await off_loop(call, owned)
    await off_loop(ctx.pve.wait_for_task, upid, timeout=ctx.settings.task_timeout, poll=0.25)
    ctx.step(f"{action} done", 1.0)


async def _guard(ctx: Context) -> NotOurs | None:
    """The ownership guard, before a run does anything else: a record whose
    CT is gone or someone else's is marked as owning none, and no PVE write
    is made; a CT gone from its node but found, ours, on another registered
    node of its cluster (moved outside the provisioner) is followed there.
    Returns what was lost, if anything."""
    if ctx.container().vmid is None:
        return None
    try:
        await off_loop(ctx.owned)
        return None
    except NotOurs as lost:
        if lost.gone and await migrate.follow_elsewhere(ctx):
            return None  # moved within its cluster: the record follows it
        log.warning("container %s: %s", ctx.container_id, lost.message)
        ctx.disown()
        return lost


def build_context(settings: Settings, factory: sessionmaker[Session], redis: Redis,
                  container_id: str, events: EventPublisher,
                  operation_id: str | None = None) -> Context:  # fmt: skip
    box = load_secret_box(settings.secret_key, settings.secret_key_file)
    params: dict[str, Any] = {}
    with factory() as session:
        ct = session.get(Container, container_id)
        if ct is None:
            raise LookupError(f"no container {container_id}")
        if operation_id is not None:
            op = session.get(Operation, operation_id)
            if op is None or op.container_id != container_id:
                raise LookupError(f"no operation {operation_id} of container {container_id}")
            params = dict(op.params)
        node = session.get(Node, ct.node_id)
        assert node is not None
        pve = client_for(node, box)
        template = load_named_template(settings, ct.template)
        variables = stored_variables(box, ct)
        plan = plan_named(ct.plan)
    from provisioner.logsafe import register_secret

    for value in secret_values(template, variables):
        register_secret(value)
    return Context(settings=settings, factory=factory, redis=redis, box=box,
                   container_id=container_id, template=template, pve=pve, events=events,
                   variables=variables, on_progress=progress_saver(redis, events),
                   operation_id=operation_id, params=params, plan=plan)  # fmt: skip


async def execute(settings: Settings, factory: sessionmaker[Session], redis: Redis,
                  container_id: str, action: str, holder: str,
                  operation_id: str | None = None) -> str:  # fmt: skip
    """Run one action while holding the lease.  Returns a one-line outcome."""
    with factory() as session:
        ct = session.get(Container, container_id)
        reason = moot(ct.lifecycle, action) if ct is not None else None
    if reason is not None:  # before anything is loaded: its template may be gone
        log.info("%s of %s not needed: %s", action, container_id, reason)
        return f"not needed: {reason}"
    events = EventPublisher(redis, factory, container_id)
    ctx: Context | None = None
    try:
        ctx = build_context(settings, factory, redis, container_id, events, operation_id)
        with lease.LeaseKeeper(factory, container_id, holder, settings.lease_duration,
                               settings.lease_renew_interval) as keeper:  # fmt: skip
            return await _execute(ctx, action, keeper)
    finally:
        if ctx is not None:
            await ctx.close()
            ctx.pve.close()
        events.close()


def moot(lifecycle: Lifecycle, action: str) -> str | None:
    """Why an action queued earlier has nothing left to do now that it runs
    (it waited behind another run that settled the matter), or None."""
    if action != "provision" and lifecycle == Lifecycle.DESTROYED:
        return "the container is destroyed"
    if action == "retry" and lifecycle == Lifecycle.READY:
        return "the container is ready"
    return None


async def _execute(ctx: Context, action: str, keeper: lease.LeaseKeeper) -> str:
    ct = ctx.container()
    if action == "provision" and ct.lifecycle not in (Lifecycle.PENDING, Lifecycle.CREATING):
        # a duplicate or late job: only "retry" re-runs a failed container
        return f"nothing to do: the container is {ct.lifecycle.value}"
    if action in ("provision", "retry", "resync"):
        return await _provisioning(ctx, action, keeper)
    if action == "migrate" and ctx.params.get("drain"):
        return await _drain_move(ctx, keeper)
    if action in changes.RUNS or action in ("sync", "promote", "migrate"):
        return await _change(ctx, action, keeper)
    ctx.phase = (ct.current_phase or "finalize") if action == "destroy" else "finalize"
    if action == "destroy":
        ctx.update(lifecycle=Lifecycle.DESTROYING)
    try:
        lost = await _retrying(ctx, "the ownership check", lambda: _guard(ctx), keeper)
        if action == "destroy":
            await _retrying(ctx, "destroy", lambda: _destroy(ctx), keeper)
            done = f"destroyed the record only ({lost.message})" if lost else "destroyed"
            ctx.events.publish("complete", done, phase=ctx.phase, percent=100,
                               outcome="destroyed")  # fmt: skip
            ctx.update(lifecycle=Lifecycle.DESTROYED, finished_at=utcnow())
            return done
        if lost is not None:
            raise lost
        await _retrying(ctx, action, lambda: _power(ctx, action), keeper)
    except LeaseLost:
        raise
    except Exception as exc:
        await _action_failed(ctx, action, exc)
        raise
    ctx.events.publish("complete", f"{action} done", phase=ctx.phase, percent=100,
                       outcome="done")  # fmt: skip
    return f"{action} done"


async def _drain_move(ctx: Context, keeper: lease.LeaseKeeper) -> str:
    """A drain's move (``provisioner.drain``): however it ends, the drain's
    next step is queued; a move that failed is noted, so the drain skips
    that container.  A run whose lease is lost goes on elsewhere, and that
    run queues the step."""
    node = str(ctx.params["drain"])
    try:
        done = await _change(ctx, "migrate", keeper)
    except LeaseLost:
        raise
    except Exception:
        drain.note_failed(ctx.redis, node, ctx.container_id)
        drain.enqueue_step(ctx.redis, ctx.settings, node)
        raise
    drain.enqueue_step(ctx.redis, ctx.settings, node)
    return done


async def _change(ctx: Context, action: str, keeper: lease.LeaseKeeper) -> str:
    """A day-two change (snapshot, rollback, delete-snapshot, set): the
    guard, then the change; the lifecycle stays as it is."""
    ctx.phase = "finalize"
    try:
        lost = await _retrying(ctx, "the ownership check", lambda: _guard(ctx), keeper)
        if lost is not None:
            raise lost
        if action in ("sync", "promote"):
            done = await refresh.refresh(ctx, action)
        elif action == "migrate":
            done = await migrate.migrate(ctx, ctx.params)
        else:
            done = await changes.RUNS[action](ctx, ctx.params)
    except LeaseLost:
        raise
    except changes.RolledBack as exc:
        ctx.events.publish("error", exc.message, phase=ctx.phase, outcome="rolled-back")
        _finish_operation(ctx, "rolled-back", exc.message)
        raise
    except Exception as exc:
        await _action_failed(ctx, action, exc)
        raise
    ctx.events.publish("complete", done, phase=ctx.phase, percent=100, outcome="done")
    _finish_operation(ctx, "done", done)
    return done


def _finish_operation(ctx: Context, outcome: str, message: str) -> None:
    if ctx.operation_id is None:
        return
    with session_scope(ctx.factory) as session:
        op = session.get(Operation, ctx.operation_id)
        if op is not None:
            op.outcome, op.message, op.finished_at = outcome, message, utcnow()


async def _action_failed(ctx: Context, action: str, exc: Exception) -> None:
    """End a failed start/stop/reboot/destroy with its terminal event.  A
    failed destroy, or any action that found the CT not ours, leaves the
    record in error (a destroy can then be asked for again)."""
    details = _error_details(ctx, exc)
    if not isinstance(exc, ProvisionError):
        log.exception("internal error in %s of %s", action, ctx.container_id)
        details["message"] = f"internal error: {exc.__class__.__name__}: {exc}"
    message = f"{action} failed: {details['message']}"
    hint = details.get("hint")
    if isinstance(exc, NotOurs):
        details["lost_vmid"] = exc.vmid
    text = message + (f" ({hint})" if hint else "")
    try:
        ctx.events.publish("error", text, phase=ctx.phase, outcome="failed")
        _finish_operation(ctx, "failed", message)
    finally:
        if action == "destroy" or isinstance(exc, NotOurs):
            ctx.update(lifecycle=Lifecycle.ERROR, error_message=message, error_details=details)
            notify_or_warn(ctx.factory, ctx.redis, ctx.settings, ctx.container_id, "error", text,
                           box=ctx.box)  # fmt: skip


async def _provisioning(ctx: Context, action: str, keeper: lease.LeaseKeeper) -> str:
    """A provisioning, a retry (resumes where it failed) or a resync (files
    and scripts again): the phases not yet finished, then ``ready``."""
    ct = ctx.container()
    if action == "resync":
        ctx.phase = "deploy"
        try:
            lost = await _retrying(ctx, "the ownership check", lambda: _guard(ctx), keeper)
            if lost is not None:
                raise lost
        except LeaseLost:
            raise
        except Exception as exc:
            await _action_failed(ctx, action, exc)
            raise
        try:
            await changes.begin_safe_change(ctx, "resync",
                                            check_on_failure(ctx.params.get("on_failure")))  # fmt: skip
        except Exception as exc:
            await _action_failed(ctx, action, exc)
            raise
        ctx.update(finished_phases=[p for p in ct.finished_phases if p in ("create", "start")],
                   finished_scripts=[])  # fmt: skip
    ctx.update(lifecycle=Lifecycle.CREATING, error_message=None, error_details=None,
               attempts=ct.attempts + 1, started_at=ct.started_at or utcnow())  # fmt: skip
    ctx.phase = "create"
    try:
        if action != "resync":  # (a resync was checked above)
            lost = await _retrying(ctx, "the ownership check", lambda: _guard(ctx), keeper)
            if lost is not None:
                ctx.warn(f"{lost.message}; creating a new one")
        await _provision(ctx, keeper)
    except LeaseLost:
        raise
    except Exception as exc:
        change = SafeChange.from_dict(ctx.container().safe_change)
        if change is not None and await _rolled_back(ctx, change, exc):
            raise
        await _fail(ctx, exc)
        raise
    change = SafeChange.from_dict(ctx.container().safe_change)
    if change is not None:
        await changes.end_safe_change(ctx, change)
        _finish_operation(ctx, "ready", "resync done")
    ip = ctx.container().ip
    # the terminal event first: whoever sees "ready" finds it in the history
    ready = f"CT {ctx.read_vmid()} is ready at {ip}"
    ctx.events.publish("complete", ready, phase="finalize", percent=100, outcome="ready")
    ctx.update(lifecycle=Lifecycle.READY, current_phase=None, finished_at=utcnow())
    release(ctx.redis, ctx.container_id)  # what placement reserved is now used
    notify_or_warn(ctx.factory, ctx.redis, ctx.settings, ctx.container_id, "ready", ready,
                   box=ctx.box)  # fmt: skip
    return f"ready at {ip}"


async def _rolled_back(ctx: Context, change: SafeChange, exc: Exception) -> bool:
    """A failed change with a safety snapshot: roll back (its policy
    permitting) and end the run ``rolled-back``.  False when nothing was
    rolled back (policy ``keep``; or the rollback failed too, which the
    failure's message then says): the run fails as any other."""
    details = _error_details(ctx, exc)
    if not isinstance(exc, ProvisionError):
        log.exception("internal error in %s of %s", ctx.phase, ctx.container_id)
        details["message"] = f"internal error: {exc.__class__.__name__}: {exc}"
    failure = f"{ctx.phase} failed: {details['message']}"
    try:
        done = await changes.undo_safe_change(ctx, change, failure)
    except Exception as undo_exc:
        text = undo_exc.message if isinstance(undo_exc, ProvisionError) else repr(undo_exc)
        ctx.warn(f"rolling back to '{change.snapshot}' failed: {text}")
        return False
    if done is None:
        return False
    message = f"{failure}; {done}"
    ctx.events.publish("error", message, phase=ctx.phase, outcome="rolled-back")
    _finish_operation(ctx, "rolled-back", message)
    ctx.update(lifecycle=Lifecycle(change.lifecycle), error_message=None, error_details=None,
               finished_at=utcnow())  # fmt: skip
    return True


async def _fail(ctx: Context, exc: Exception) -> None:
    """Record the failure, apply the failure policy, then end the stream."""
    details = _error_details(ctx, exc)
    if not isinstance(exc, ProvisionError):
        log.exception("internal error in %s of %s", ctx.phase, ctx.container_id)
        details["message"] = f"internal error: {exc.__class__.__name__}: {exc}"
    message = f"{ctx.phase} failed: {details['message']}"
    ctx.update(error_message=message, error_details=details)
    hint = details.get("hint")
    final = Lifecycle.ERROR
    if ctx.container().failure_policy == FailurePolicy.DESTROY:
        ctx.update(lifecycle=Lifecycle.DESTROYING)
        try:
            await _destroy(ctx)
        except ProvisionError as destroy_exc:
            log.error("destroying %s after its failure failed: %s", ctx.container_id, destroy_exc)
            hint = f"destroying it (failure policy 'destroy') failed too: {destroy_exc}"
        else:
            final = Lifecycle.DESTROYED
            hint = "the container was destroyed (failure policy 'destroy'); fix the cause and request it again"
        details["hint"] = hint
        ctx.update(error_details=details)
    # the terminal event first, as for "ready": whoever sees the lifecycle
    # finds the error in the history; the lifecycle even if Redis is away
    # (else recovery would run the failed provisioning again)
    text = message + (f" ({hint})" if hint else "")
    try:
        ctx.events.publish("error", text, phase=ctx.phase, outcome="error")
        _finish_operation(ctx, "error", message)
    finally:
        if final == Lifecycle.DESTROYED:
            ctx.update(lifecycle=final, finished_at=utcnow())
        else:
            ctx.update(lifecycle=final)
        release(ctx.redis, ctx.container_id)
        notify_or_warn(ctx.factory, ctx.redis, ctx.settings, ctx.container_id, "error", text,
                           box=ctx.box)  # fmt: skip


def _acquire(settings: Settings, factory: sessionmaker[Session], container_id: str, action: str,
             holder: str) -> bool:  # fmt: skip
    """Take the container's lease.

    A second ``provision`` of a container another worker is running is a
    duplicate and gives up at once (if that worker dies, recovery re-enqueues
    the run).  Any other action (destroy, stop, retry, ...) asked for while a
    run holds the lease waits for it, so it is never silently dropped.
    """
    if lease.acquire(factory, container_id, holder, settings.lease_duration):
        return True
    if action == "provision":
        return False
    log.info("container %s is busy: %s waits for the running job", container_id, action)
    deadline = time.monotonic() + settings.job_timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if lease.acquire(factory, container_id, holder, settings.lease_duration):
            return True
    return False


def run_redis(settings: Settings) -> Redis:
    """The run's Redis client: short timeouts and no retries of its own,
    the run decides (events wait in their outbox, the vmid lock is a
    transient error)."""
    # a command takes milliseconds: past 1.5 s Redis is stalled, and the
    # events wait in their outbox instead of the run waiting for Redis
    return redis_client(settings.redis_url, socket_timeout=1.5, socket_connect_timeout=1.5,
                          retry=Retry(NoBackoff(), 0), health_check_interval=10)  # fmt: skip


def _mark_leased(redis: Redis, factory: sessionmaker[Session], container_id: str) -> None:
    """Note in the job's meta the seq this run's events follow: a follower
    (``--follow``) reads past an earlier run's end.  A Redis that does not
    answer now costs the follower that hint, not the run."""
    job = get_current_job()
    if job is None:
        return
    try:
        job.meta["leased_after"] = latest_seq(redis, factory, container_id)
        job.save_meta()
    except RedisError as exc:
        log.warning("the job's leased_after not saved: %s", exc)


def run(container_id: str, action: str = "provision", operation_id: str | None = None) -> str:
    """The RQ entry point (``pipeline.job.run``)."""
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    engine = make_engine(settings.database_url)
    factory = session_factory(engine)
    redis = run_redis(settings)
    holder = lease.make_holder()
    if not _acquire(settings, factory, container_id, action, holder):
        log.info("container %s is being worked on by another worker; nothing to do",
                 container_id)  # fmt: skip
        return "skipped: another worker holds the lease"
    with factory() as session:
        ct = session.get(Container, container_id)
        before = ct.next_seq - 1 if ct is not None else 0  # this run's events follow
    try:
        _mark_leased(redis, factory, container_id)
        return asyncio.run(execute(settings, factory, redis, container_id, action, holder,
                                   operation_id))  # fmt: skip
    except JobTimeoutException:
        _out_of_time(settings, factory, redis, container_id, action, before)
        raise
    finally:
        lease.release(factory, container_id, holder)
        redis.close()
        engine.dispose()


def _out_of_time(settings: Settings, factory: sessionmaker[Session], redis: Redis,
                 container_id: str, action: str, before: int) -> None:  # fmt: skip
    """End a run that RQ's job timeout stopped, unless it ended itself.

    The timeout goes off in the main thread.  While the run waits in a
    worker thread (a PVE call through ``off_loop``) or on the event loop (an
    SSH wait), that is outside the run's coroutine: its own failure handling
    never sees it, and asyncio cancels it instead.  So the run's failure is
    recorded here as that handling would have: the terminal event, the
    error, and for a provisioning or a destroy the ``error`` lifecycle
    (recovery does not run it again; ``retry`` resumes it).  The failure
    policy ``destroy`` is not applied: its PVE calls would need the time
    the job no longer has.
    """
    if any(e.terminal for e in stored_events(factory, container_id, before)):
        return
    with factory() as session:
        ct = session.get(Container, container_id)
        if ct is None:
            return
        phase = ct.current_phase or "finalize"
    provisioning = action in ("provision", "retry", "resync")
    job = get_current_job()
    limit = job.timeout if job is not None and job.timeout else settings.job_timeout
    cause = f"the job ran out of time after {limit} s (the job timeout, PROVISIONER_JOB_TIMEOUT)"
    hint = "find what hung in the log above; retry resumes where it stopped"
    message = f"{phase if provisioning else action} failed: {cause}"
    with EventPublisher(redis, factory, container_id) as events:
        events.publish("error", f"{message} ({hint})", phase=phase,
                       outcome="error" if provisioning else "failed")  # fmt: skip
    if provisioning or action == "destroy":
        with session_scope(factory) as session:
            ct = session.get(Container, container_id)
            if ct is not None:
                ct.lifecycle = Lifecycle.ERROR
                ct.error_message = message
                ct.error_details = {"phase": phase, "message": cause, "hint": hint}
        notify_or_warn(factory, redis, settings, container_id, "error", f"{message} ({hint})")
