"""A drain's step as an RQ job (``provisioner.drain`` says how a drain
goes): queue the move of the node's next container, then return."""

from __future__ import annotations

from pipeline.job import run_redis
from provisioner import lease
from provisioner.config import Settings
from provisioner.db import make_engine, session_factory
from provisioner.drain import next_move
from provisioner.logsafe import setup_logging
from provisioner.secrets.keyfile import load_secret_box


def step(node: str) -> str:
    """The RQ entry point (``pipeline.drain.step``)."""
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    engine = make_engine(settings.database_url)
    redis = run_redis(settings)
    factory = session_factory(engine)
    box = load_secret_box(settings.secret_key, settings.secret_key_file)
    try:
        with factory() as session:
            return next_move(session, box, redis, settings, node,
                             lambda cid: lease.held(factory, cid))  # fmt: skip
    finally:
        redis.close()
        engine.dispose()
