"""A run's outcome on its terminal event: ``container_events.outcome``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Terminal events stored before this revision get their outcome from their
wording, the way ``/metrics`` read it until now (pipeline/job.py's
messages): "<phase> failed: ..." in that phase is a failed provisioning
run ("error"), any other error a failed action ("failed"); "CT <vmid> is
ready at <ip>" a provisioning run that ended "ready", "destroyed..." a
destroy, any other complete a power action ("done").  Frozen: the wording
is spelled out here, not imported.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column, then fill it in for the terminal events already stored
    (one UPDATE: it runs in ``--sql`` mode too)."""
    op.add_column("container_events", sa.Column("outcome", sa.String(length=16), nullable=True))
    events = sa.table(
        "container_events",
        sa.column("type", sa.String()),
        sa.column("phase", sa.String()),
        sa.column("message", sa.Text()),
        sa.column("outcome", sa.String()),
    )
    complete = events.c.type == "complete"
    # "<phase> failed:" at the start, compared exactly (LIKE ignores case on SQLite)
    phase_failed = sa.func.substr(events.c.message, 1, sa.func.length(events.c.phase) + 8) == (
        events.c.phase + " failed:"
    )
    outcome = sa.case(
        (complete & events.c.message.like("% is ready at %"), "ready"),
        (complete & (sa.func.substr(events.c.message, 1, 9) == "destroyed"), "destroyed"),
        (complete, "done"),
        (events.c.phase.is_not(None) & (events.c.phase != "") & phase_failed, "error"),
        else_="failed",
    )
    op.execute(
        sa.update(events).where(events.c.type.in_(["complete", "error"])).values(outcome=outcome)
    )


def downgrade() -> None:
    """Drop the column (the wording still tells the outcome)."""
    op.drop_column("container_events", "outcome")
