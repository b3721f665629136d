"""The sandbox expiry round as an RQ job: ``provisioner scheduler`` (the
Procfile's ``scheduler``, RQ's cron scheduler) queues it on the
provisioning queue every ``PROVISIONER_SANDBOX_EXPIRY_INTERVAL`` seconds
and a worker runs it (``provisioner.sandbox_expiry`` does the work)."""

from __future__ import annotations

from pipeline.job import run_redis
from provisioner.config import Settings
from provisioner.db import make_engine, session_factory
from provisioner.logsafe import setup_logging
from provisioner.models import utcnow
from provisioner.sandbox_expiry import sweep


def expire_round() -> str:
    """The RQ entry point: one round over every live sandbox."""
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    engine = make_engine(settings.database_url)
    redis = run_redis(settings)
    try:
        warned, expired = sweep(settings, session_factory(engine), redis, utcnow())
    finally:
        redis.close()
        engine.dispose()
    return f"{warned} expiring, {expired} expired"
