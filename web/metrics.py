"""Prometheus metrics at ``/metrics`` (text exposition format 0.0.4).

What it shows: containers by lifecycle; finished provisioning runs by
outcome, with histograms of their duration and of each phase's duration
(from the stored events, ``provisioner.timings``); the RQ queue (jobs waiting, running, failed, ...),
the running jobs by action and phase (their ``meta``), the workers by state;
build information.

Behind the app's guard like every route: Prometheus scrapes with an API
token (``authorization: {credentials_file: ...}`` in its scrape config).  A
scraper gets 401 rather than the login redirect that pages get.

Cheap by design: the text is rebuilt at most every ``web_metrics_max_age`` seconds
(default 5) per web process; counts are aggregate queries; runs are folded
into the histograms once, as their terminal event appears (a cursor over
event ids), so a scrape reads only what is new.
"""

from __future__ import annotations

import logging
import math
import platform
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version

from flask import Blueprint, Flask, Response, current_app
from redis import Redis
from redis import exceptions as redis_errors
from rq import Queue, Worker
from rq.job import Job
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from provisioner.events import PROVISIONING_OUTCOMES, TERMINAL_TYPES
from provisioner.models import Container, ContainerEvent, Lifecycle, utcnow
from provisioner.phases import ALL_PHASES
from provisioner.queue import provisioning_queue
from provisioner.timings import Mark, RunTiming, run_timing, split_runs
from web.resources import EXTENSION as APP_EXTENSION
from web.resources import WebResources

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
EXTENSION = "provisioner.metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASE_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RUN_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
OUTCOMES = PROVISIONING_OUTCOMES  # the runs counted: provision, retry, resync
# A terminal event's transaction may commit after one with a higher id (on
# PostgreSQL): ids newer than this are read again until they are this old.
SETTLE = timedelta(seconds=60)
CONTAINER_BATCH = 500


# -- the text format (pure) ---------------------------------------------------


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family: its HELP, TYPE and samples."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, labels, value))

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{self.name}{suffix}{{{text}}} {format_value(value)}" if text
                         else f"{self.name}{suffix} {format_value(value)}")  # fmt: skip
        return lines


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families``."""
    return "\n".join(line for f in families for line in f.render()) + "\n"


@dataclass
class Histogram:
    """Cumulative bucket counts, a sum and a count."""

    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def add_to(self, family: Family, **labels: str) -> None:
        for bound, n in zip(self.buckets, self.counts, strict=True):
            family.add(n, "_bucket", **labels, le=format_value(bound))
        family.add(self.count, "_bucket", **labels, le="+Inf")
        family.add(self.total, "_sum", **labels)
        family.add(self.count, "_count", **labels)


# -- runs from the stored events (pure) ---------------------------------------


def summarize_run(run: Sequence[Mark]) -> RunTiming | None:
    """The timing of one run (its events up to and including the terminal
    one, ``provisioner.timings``), or None for a run that is not
    provisioning (destroy, start, stop, reboot): its terminal event's
    outcome says which.  The time between the attempts of a retried run is
    not counted, each attempt being a run of its own."""
    timing = run_timing(run)
    if timing is None or timing.outcome not in OUTCOMES:
        return None
    return timing


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


# -- collection ---------------------------------------------------------------


class RunLedger:
    """Finished provisioning runs folded into counters and histograms.

    Each terminal event is folded once: every refresh reads the terminal
    events after a cursor over event ids, then the non-log events of their
    containers, a batch of containers per short transaction (on SQLite a
    transaction holds the write lock).
    """

    def __init__(self) -> None:
        self.runs = dict.fromkeys(OUTCOMES, 0)
        self.run_seconds = {o: Histogram(RUN_BUCKETS) for o in OUTCOMES}
        self.phase_seconds = {
            (p, o): Histogram(PHASE_BUCKETS) for p in ALL_PHASES for o in OUTCOMES
        }
        self._cursor = 0  # every terminal event with an id up to here is folded
        self._folded: set[int] = set()  # terminal events above the cursor already folded

    def refresh(self, factory: sessionmaker[Session]) -> None:
        settled_before = utcnow() - SETTLE
        with factory() as session:
            rows = session.execute(
                select(ContainerEvent.id, ContainerEvent.container_id, ContainerEvent.seq,
                       ContainerEvent.ts)
                .where(ContainerEvent.id > self._cursor,
                       ContainerEvent.type.in_(TERMINAL_TYPES),
                       ContainerEvent.outcome.in_(OUTCOMES))
                .order_by(ContainerEvent.id)).all()  # fmt: skip
        new: dict[str, dict[int, int]] = {}  # container -> {seq: id} of its new terminal events
        for row in rows:
            if row.id not in self._folded:
                new.setdefault(row.container_id, {})[row.seq] = row.id
        containers = sorted(new)
        for start in range(0, len(containers), CONTAINER_BATCH):
            batch = {c: new[c] for c in containers[start : start + CONTAINER_BATCH]}
            self._fold(factory, batch)
            # marked per batch: should a later batch fail, these are not counted again
            self._folded.update(i for ids in batch.values() for i in ids.values())
        settled = [r.id for r in rows if r.ts < settled_before]
        if settled:
            # everything up to the newest settled terminal event is folded; an
            # unsettled one below it stays in _folded until the cursor passes
            self._cursor = max(self._cursor, *settled)
            self._folded = {i for i in self._folded if i > self._cursor}

    def _fold(
        self, factory: sessionmaker[Session], wanted: Mapping[str, Mapping[int, int]]
    ) -> None:
        last = max(max(seqs) for seqs in wanted.values())
        with factory() as session:
            rows = session.execute(
                select(ContainerEvent.container_id, ContainerEvent.seq, ContainerEvent.type,
                       ContainerEvent.phase, ContainerEvent.outcome, ContainerEvent.ts)
                .where(ContainerEvent.container_id.in_(list(wanted)),
                       ContainerEvent.type != "log", ContainerEvent.seq <= last)
                .order_by(ContainerEvent.container_id, ContainerEvent.seq)).all()  # fmt: skip
        by_container: dict[str, tuple[list[int], list[Mark]]] = {}
        for r in rows:
            seqs, marks = by_container.setdefault(r.container_id, ([], []))
            seqs.append(r.seq)
            marks.append(Mark(r.type, r.phase, r.ts, r.outcome))
        for cid, (seqs, marks) in by_container.items():
            end = 0  # the events of the runs so far: this run's terminal one is at end - 1
            for run in split_runs(marks):
                end += len(run)
                if seqs[end - 1] in wanted[cid]:
                    self._observe(summarize_run(run))

    def _observe(self, summary: RunTiming | None) -> None:
        if summary is None or summary.outcome is None:
            return
        outcome = summary.outcome  # one of OUTCOMES (summarize_run)
        self.runs[outcome] += 1
        self.run_seconds[outcome].observe(summary.seconds)
        for phase, seconds in summary.phases.items():
            self.phase_seconds[(phase, outcome)].observe(seconds)

    def families(self) -> list[Family]:
        runs = Family(
            "provisioner_runs_total",
            "counter",
            "Finished provisioning runs (provision, retry, resync) by outcome.",
        )
        for outcome, n in self.runs.items():
            runs.add(n, outcome=outcome)
        run_seconds = Family(
            "provisioner_run_duration_seconds",
            "histogram",
            "Duration of finished provisioning runs, first event to the last.",
        )
        for outcome, hist in self.run_seconds.items():
            hist.add_to(run_seconds, outcome=outcome)
        phase_seconds = Family(
            "provisioner_phase_duration_seconds",
            "histogram",
            "Time finished provisioning runs spent in each phase.",
        )
        for (phase, outcome), hist in self.phase_seconds.items():
            hist.add_to(phase_seconds, phase=phase, outcome=outcome)
        return [runs, run_seconds, phase_seconds]  # fmt: skip


def container_families(factory: sessionmaker[Session]) -> list[Family]:
    with factory() as session:
        counts = dict(session.execute(
            select(Container.lifecycle, func.count()).group_by(Container.lifecycle)).all())  # fmt: skip
    family = Family("provisioner_containers", "gauge", "Containers by lifecycle state.")
    for state in Lifecycle:
        family.add(counts.get(state, 0), lifecycle=state.value)
    return [family]


def queue_families(queue: Queue) -> list[Family]:
    """The queue, its registries, its running jobs and its workers."""
    name = queue.name
    jobs = Family(
        "provisioner_queue_jobs",
        "gauge",
        "RQ jobs of the provisioning queue by state (queued = waiting for a worker).",
    )
    jobs.add(queue.count, queue=name, state="queued")
    registries = {"started": queue.started_job_registry, "failed": queue.failed_job_registry,
                  "deferred": queue.deferred_job_registry,
                  "scheduled": queue.scheduled_job_registry,
                  "finished": queue.finished_job_registry}  # fmt: skip
    for state, registry in registries.items():
        # no cleanup: reading metrics must not move jobs between registries
        jobs.add(registry.get_job_count(cleanup=False), queue=name, state=state)

    oldest = Family(
        "provisioner_queue_oldest_job_age_seconds",
        "gauge",
        "How long the oldest queued job has been waiting (0: none).",
    )
    age = 0.0
    head = queue.get_job_ids(0, 1)
    job = Job.fetch_many(head, connection=queue.connection)[0] if head else None
    if job is not None and job.enqueued_at is not None:
        enqueued = job.enqueued_at
        age = _seconds(enqueued if enqueued.tzinfo else enqueued.replace(tzinfo=UTC), utcnow())
    oldest.add(age, queue=name)

    running = Family(
        "provisioner_jobs_running",
        "gauge",
        "Jobs being worked on, by action and current phase (from the job's meta).",
    )
    by_phase: dict[tuple[str, str], int] = {}
    started = queue.started_job_registry.get_job_ids(cleanup=False)
    for job in Job.fetch_many(started, connection=queue.connection):
        if job is not None:
            key = (str(job.meta.get("action") or "unknown"), str(job.meta.get("phase") or "none"))
            by_phase[key] = by_phase.get(key, 0) + 1
    for (action, phase), n in sorted(by_phase.items()):
        running.add(n, queue=name, action=action, phase=phase)

    workers = Family("provisioner_workers", "gauge", "RQ workers listening on the queue, by state.")
    states = dict.fromkeys(("idle", "busy", "started", "suspended"), 0)
    for worker in Worker.all(queue=queue):
        state = str(worker.get_state())
        states[state] = states.get(state, 0) + 1
    for state, n in states.items():
        workers.add(n, queue=name, state=state)
    return [jobs, oldest, running, workers]  # fmt: skip


def build_family() -> Family:
    family = Family(
        "provisioner_build_info",
        "gauge",
        "Versions of lxc-provisioner and what it runs on (always 1).",
    )
    family.add(1, version=_version("lxc-provisioner"), rq=_version("rq"),
               python=platform.python_version())  # fmt: skip
    return family


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


class MetricsCache:
    """The exposition text, rebuilt at most every ``ttl`` seconds."""

    def __init__(self, factory: sessionmaker[Session], redis: Redis, queue_name: str,
                 ttl: float) -> None:  # fmt: skip
        self.factory = factory
        self.redis = redis
        self.queue_name = queue_name
        self.ttl = ttl
        self.ledger = RunLedger()
        self._lock = threading.Lock()
        self._text = ""
        self._built = -math.inf

    def text(self) -> str:
        with self._lock:  # one rebuild at a time; the others get its result
            if time.monotonic() - self._built >= self.ttl:
                self._text = self._build()
                self._built = time.monotonic()
            return self._text

    def _build(self) -> str:
        started = time.perf_counter()
        families = [build_family(), *container_families(self.factory)]
        self.ledger.refresh(self.factory)
        families += self.ledger.families()
        redis_up = Family(
            "provisioner_redis_up",
            "gauge",
            "Whether Redis (queue and event bus) answered this scrape.",
        )
        try:
            families += queue_families(Queue(self.queue_name, connection=self.redis))
            redis_up.add(1)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            log.warning("metrics: Redis did not answer, queue metrics left out: %s", exc)
            redis_up.add(0)
        families.append(redis_up)
        took = Family(
            "provisioner_metrics_build_seconds",
            "gauge",
            "Time this process took to compute these metrics.",
        )
        took.add(round(time.perf_counter() - started, 6))
        families.append(took)
        return render(families)


@bp.route("/metrics")
def metrics() -> Response:
    """The metrics, for Prometheus (scrape with a bearer API token)."""
    cache: MetricsCache = current_app.extensions[EXTENSION]
    return Response(cache.text(), mimetype=None, content_type=CONTENT_TYPE)


def init_app(app: Flask) -> None:
    res: WebResources = app.extensions[APP_EXTENSION]
    queue_name = provisioning_queue(res.redis, res.settings).name
    app.extensions[EXTENSION] = MetricsCache(res.factory, res.redis, queue_name,
                                             res.settings.web_metrics_max_age)  # fmt: skip
    app.register_blueprint(bp)
